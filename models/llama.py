"""The on-device LLM: llama.cpp through llama-cpp-python (the only module that imports llama_cpp).

How the weights are held follows the memory budget (``models/flash.py`` plans it,
``models/placement.py`` carries it out): all resident (mmapped, repacked for speed) when model and
KV cache fit; otherwise file-backed, repacking and the whole-file prefetch off, a pinned set of
bytes kept in memory and the rest streamed layer by layer, driven by following compute node by
node (ggml's abort callback counting on a semaphore). File-backed with the policy, prompt-lookup
guesses are verified several per forward pass (``Lookup``): a pass costs about the same for one
token as for ten when reading the streamed weights dominates it. Extra buffer types (weight
repacking, and the AMX path that crashes on some CPUs) are also off on CPUs that report AMX.
llama.cpp's own log goes to ``logging``.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger("mneme.llama")
_log_installed = False


def _route_llama_log() -> None:
    global _log_installed
    if _log_installed:
        return
    import llama_cpp

    @llama_cpp.llama_log_callback
    def _cb(level, text, user_data):  # noqa: ARG001
        msg = text.decode("utf-8", "replace").rstrip()
        if msg:
            log.debug(msg)

    _route_llama_log.cb = _cb  # keep the callback alive
    llama_cpp.llama_log_set(_cb, ctypes.c_void_p(0))
    _log_installed = True


def cpu_has_amx() -> bool:
    try:
        return "amx" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


_params_lock = threading.Lock()
# Base models complete text: one worked example shows the pattern. Its facts are invented and
# appear in no test or fixture.
EXAMPLE = ("Excerpts:\n<memory>\n[1] (2021-06-02 09:10, Notes) Oskar: the gym locker code is 5719\n"
           "[2] (2021-06-03 18:20, Chat · Climbing) Lena: the bouldering hall opens at 7 on Saturdays\n"
           "</memory>\nQuestion: When does the bouldering hall open on Saturdays?\n"
           "Answer: It opens at 7 on Saturdays [2].")
# Stop rules: one line, and no excerpt header — a citation followed by "(" as in
# "[9] (2026-03-17 15:40, chat) …" — and no fence. What is left is checked before it is shown.
STOPS = ["\n", "](", "] (", "</memory>", "<memory>", "Question:", "Excerpts:", "<end_of_turn>"]
_DATA = "\x00data\x00"
# Prompt lookup pays when a pass's reading outweighs its compute. Qwen2.5-Coder 1.5B answering
# Mneme's prompt (BENCHMARKS.md, "Sixth look"): a budget a little short of resident pins every
# weight and streams nothing, and lookup ran 8.37 tok/s against plain mmap's 23.71 (1.25x); with
# 15 % of the weights streamed (1.0x), 5.77 against 7.94 without lookup over twelve answers; 42 %
# (0.75x), 3.61 against 2.50; 70 % (0.5x), 3.27 against 1.77.
LOOKUP_STREAMED = 1 / 3


class Lookup:
    """Prompt-lookup guesses (llama-cpp-python's ``LlamaPromptLookupDecoding``: the tokens that
    followed the last n-gram where it occurred before, in the prompt or the answer so far), with
    counts: tokens guessed, guesses accepted, and forward passes after the prompt's. llama-cpp-
    python asks for a guess before each pass, with the tokens so far: those added since the last
    guess are the guesses it accepted and one token sampled, so acceptance is counted at the next
    guess (the last pass of an answer is not counted). ``start()`` before each completion."""

    def __init__(self, max_ngram_size: int = 2, num_pred_tokens: int = 10):
        from llama_cpp.llama_speculative import LlamaPromptLookupDecoding

        self.guesser = LlamaPromptLookupDecoding(max_ngram_size, num_pred_tokens)
        self.guessed = self.accepted = self.passes = 0
        self._seen: int | None = None

    def start(self) -> None:
        self._seen = None

    def __call__(self, input_ids, /, **kwargs):
        if self._seen is not None:
            self.accepted += len(input_ids) - self._seen - 1
        out = self.guesser(input_ids, **kwargs)
        self._seen = len(input_ids)
        self.guessed += len(out)
        self.passes += 1
        return out


_llama_class = None


def _llama():
    """``llama_cpp.Llama`` that, with a guesser (``draft_model``), asks llama.cpp for every
    position's logits only in the short passes that verify guesses and keeps no copy of them.
    (Llama itself then asks for logits of every prompt token too, and copies each row into
    ``scores``: n_vocab floats per token, 600 KB for a 150k vocabulary, hundreds of MB per
    prompt — the memory a budget is meant to keep.) Without a guesser it is Llama unchanged."""
    global _llama_class
    if _llama_class is not None:
        return _llama_class
    import llama_cpp

    from mneme.models.flash import MAX_OUTPUTS

    class _Llama(llama_cpp.Llama):
        def eval(self, tokens):
            if self.draft_model is None:
                return super().eval(tokens)
            # Only logits of verified positions are read (``sample(idx=)`` counts back from the
            # last output); no logprobs are asked, so ``scores`` is never read.
            verify = len(tokens) <= MAX_OUTPUTS
            self._ctx.kv_cache_seq_rm(-1, self.n_tokens, -1)
            for i in range(0, len(tokens), self.n_batch):
                batch = tokens[i:i + self.n_batch]
                n_past = self.n_tokens
                self._batch.set_batch(batch=batch, n_past=n_past, logits_all=verify)
                self._ctx.decode(self._batch)
                self.input_ids[n_past:n_past + len(batch)] = batch
                self.n_tokens += len(batch)
                self._requires_eval = False

    _llama_class = _Llama
    return _Llama


@contextlib.contextmanager
def _default_params(model: dict, context: dict):
    """llama-cpp-python's constructor has no argument for some params (the model's
    use_extra_bufts, the context's cb_eval): hand it defaults with those fields set while it
    builds its params."""
    from llama_cpp import llama_cpp as raw

    def patch(original, fields):
        def patched():
            params = original()
            for name, value in fields.items():
                setattr(params, name, value)
            return params
        return patched

    names = {"llama_model_default_params": model, "llama_context_default_params": context}
    with _params_lock:
        saved = {name: getattr(raw, name) for name in names}
        for name, fields in names.items():
            setattr(raw, name, patch(saved[name], fields))
        try:
            yield
        finally:
            for name, original in saved.items():
                setattr(raw, name, original)


def _router_callback(placement):
    """A ggml eval callback that asks for each MoE layer's router choice (the ``ffn_moe_topk-N``
    node llama.cpp names in every MoE graph: a row of expert ids per token) and hands it to
    ``placement.route`` before the layer's experts are computed. Asking splits the graph there,
    once per MoE layer; every other node is not asked for. It never stops compute: an error is
    logged and compute goes on."""
    import llama_cpp

    lib = Path(llama_cpp.llama_cpp._lib._name).parent

    def load(stem: str):
        for name in (f"{stem}.so", f"{stem}.dylib", f"{stem}.dll"):
            if (lib / name).exists():
                return ctypes.CDLL(str(lib / name))
        return ctypes.CDLL(next(str(p) for p in sorted(lib.glob(f"{stem}*"))))

    base, cpu = load("libggml-base"), load("libggml-cpu")
    base.ggml_get_name.restype, base.ggml_get_name.argtypes = ctypes.c_char_p, [ctypes.c_void_p]
    for fn in (base.ggml_nelements, base.ggml_nrows):
        fn.restype, fn.argtypes = ctypes.c_int64, [ctypes.c_void_p]
    get = cpu.ggml_get_i32_nd
    get.restype, get.argtypes = ctypes.c_int32, [ctypes.c_void_p] + [ctypes.c_int] * 4
    prefix = b"ffn_moe_topk-"
    failed = []

    def cb(t, ask, _data):
        name = base.ggml_get_name(t)
        if not name.startswith(prefix):
            return not ask  # not asked for (and never called after compute)
        if ask:
            return True
        try:
            rows = base.ggml_nrows(t)  # tokens of the pass; a row holds each one's expert ids
            k = base.ggml_nelements(t) // max(1, rows)
            placement.route(int(name[len(prefix):]), {get(t, i, j, 0, 0) for j in range(rows) for i in range(k)})
        except Exception:  # noqa: BLE001 - returning False would stop the pass half done
            if not failed:
                failed.append(True)
                log.warning("reading the router's choice failed; experts are read as compute "
                            "faults them", exc_info=True)
        return True

    return llama_cpp.ggml_backend_sched_eval_callback(cb)


class LlamaLLM:
    """Owns one llama.cpp model; ``close()`` frees it (do not rely on garbage collection)."""

    def __init__(self, path: Path, n_ctx: int = 4096, n_threads: int = 2, low_memory: bool = False,
                 budget: str | int = "auto", policy: bool = True, lookup: bool | None = None):
        """*budget*: bytes, or a setting like "1.5G", "50%", "auto". *low_memory* forces the
        file-backed mode; *policy* False keeps it plain mmap (pages left to the kernel).
        *lookup*: verify prompt-lookup guesses several tokens per forward pass; by default on
        exactly when the policy streams at least LOOKUP_STREAMED of a dense model's weights (a
        pass then costs about the same for one token as for ten, as reading the streamed weights
        dominates it), off when less streams or it is resident (there compute dominates and
        rejected guesses cost time) and for a MoE model's expert cache (every guessed token
        routes to experts of its own, read for the pass: random Q8_0 Mixtral at 0.5x, 4.09 tok/s
        and 293 MB read a token with lookup, 3 % of 37 guesses accepted, against 8.03 and 122 MB
        without; BENCHMARKS.md, "Fifth look")."""
        import llama_cpp

        from mneme.models import flash, placement

        _route_llama_log()
        self.path = Path(path)
        self.id = self.path.name
        self._lock = threading.Lock()
        self._llm = None
        layout = flash.read_layout(self.path)
        budget_bytes = budget if isinstance(budget, int) else flash.resolve_budget(budget)
        self.plan = flash.make_plan(layout, budget_bytes, n_ctx, file_backed=low_memory)
        resident = self.plan.mode == "resident"
        self.extra_bufts = resident and not cpu_has_amx()
        self.placement = placement.Placement(self.plan, self.path, layout.n_layer) \
            if not resident and policy else None
        prefetch = placement.NoPrefetch(llama_cpp.llama_cpp._lib._name) if self.placement is not None \
            else contextlib.nullcontext()  # plain mmap keeps llama.cpp's own loading
        streams = self.placement is not None and \
            self.plan.streamed_bytes >= LOOKUP_STREAMED * self.plan.file_size
        self.lookup = Lookup() if (streams if lookup is None else lookup) else None
        # MoE with the policy: each layer's experts are read once its router has chosen them.
        self._router = _router_callback(self.placement) \
            if self.placement is not None and self.plan.experts else None
        try:
            with prefetch, _default_params({"use_extra_bufts": self.extra_bufts},
                                           {"cb_eval": self._router} if self._router else {}):
                self._llm = _llama()(
                    str(self.path), n_ctx=n_ctx, n_threads=n_threads, n_threads_batch=n_threads,
                    n_batch=self.plan.n_ubatch, n_ubatch=self.plan.n_ubatch, use_mmap=True,
                    use_mlock=False, verbose=False, seed=0, draft_model=self.lookup, swa_full=True)
            if self.placement is not None:
                self._follow_compute(self.placement)
                self.placement.start()
        except BaseException:
            self.close()
            raise
        self.prefetch_off = bool(getattr(prefetch, "active", False))
        self.n_ctx = self._llm.n_ctx()
        self.template = self._llm.metadata.get("tokenizer.chat_template") or ""
        self.read_per_token: float | None = None  # bytes read from storage per decoded token
        self.stats_path: Path | None = None  # where the last measurement is kept, if anywhere

    def _follow_compute(self, placement) -> None:
        """Each decode tells the placement it begins and ends; in between ggml's CPU backend
        counts nodes through the abort callback (libc's sem_post: never aborts, no Python)."""
        import llama_cpp

        ctx = self._llm._ctx
        decode = ctx.decode

        def followed(batch):
            placement.begin_decode()
            try:
                return decode(batch)
            finally:
                placement.end_decode()

        ctx.decode = followed
        self._abort_cb = llama_cpp.ggml_abort_callback(placement.callback_address())
        llama_cpp.llama_set_abort_callback(ctx.ctx, self._abort_cb, ctypes.c_void_p(placement.counter))

    def memory_status(self) -> dict:
        """The mode, budget and resident bytes of the plan, and the last measured bytes/token."""
        out = self.plan.summary()
        out.update(policy=self.placement is not None, pinned_locked=bool(
            self.placement and self.placement.locked), read_per_token=self.read_per_token,
            prefetch_off=self.prefetch_off, model=self.id, lookup=self.lookup is not None)
        if self.lookup is not None:
            out.update(guessed=self.lookup.guessed, accepted=self.lookup.accepted,
                       verify_passes=self.lookup.passes)
        return out

    def count_tokens(self, text: str) -> int:
        return len(self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def prompt(self, instructions: str, context: str, question: str) -> list[tuple[str, bool]]:
        """The prompt as (text, is_data) parts: captured context and the question are data."""
        if self.template:
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter

            fmt = Jinja2ChatFormatter(self.template, eos_token="", bos_token="")
            user = f"{instructions}\n\n{_DATA}\n\nQuestion: {_DATA}"
            frame = fmt(messages=[{"role": "user", "content": user}]).prompt + "Answer:"
            head, middle, tail = frame.split(_DATA)
            return [(head, False), (context, True), (middle, False), (question, True), (tail, False)]
        return [(f"{instructions}\n\n{EXAMPLE}\n\nExcerpts:\n", False), (context, True),
                ("\nQuestion: ", False), (question, True), ("\nAnswer:", False)]

    def tokens(self, prompt: list[tuple[str, bool]]) -> list[int]:
        """Template text may hold control tokens; data never does (its "<end_of_turn>" is text)."""
        out: list[int] = []
        for text, is_data in prompt:
            if text:
                out += self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=not is_data)
        return out

    def stream(self, prompt: list[tuple[str, bool]], max_tokens: int,
               cancel: threading.Event) -> Iterator[str]:
        from mneme.models.placement import read_bytes

        with self._lock:
            # Resident, no reset: llama-cpp-python keeps the KV of the prompt's longest common
            # prefix with the last one (the instructions), so only what follows is evaluated. The
            # sliding-window layers of models like Gemma 3 keep every position (swa_full) so that
            # prefix is whole. Prompt lookup's verification passes start from a fresh context.
            if self.lookup is not None:
                self._llm.reset()
                self.lookup.start()
            first, n = None, 0
            try:
                for part in self._llm.create_completion(
                        self.tokens(prompt), max_tokens=max_tokens, temperature=0.0, top_k=40,
                        top_p=0.9, repeat_penalty=1.1, stream=True, stop=STOPS):
                    if first is None:
                        first = read_bytes()  # after the prompt: decoding only from here
                    else:
                        n += 1
                    if cancel.is_set():
                        return
                    yield part["choices"][0]["text"]
            finally:
                if first is not None and n:
                    self.read_per_token = (read_bytes() - first) / n
                    self._save_status()
                if self.placement is not None:
                    self.placement.settle(wait=False)

    def _save_status(self) -> None:
        """The last measurement, for `mneme status` in another process (numbers only)."""
        if self.stats_path is None:
            return
        import json

        from mneme.core.paths import write_atomic

        try:
            write_atomic(self.stats_path, json.dumps(dict(self.memory_status(), at=time.time())))
        except OSError:
            log.warning("cannot write %s", self.stats_path, exc_info=True)

    def close(self) -> None:
        with self._lock:
            if self._llm is not None:
                self._llm.close()
                self._llm = None
            if getattr(self, "placement", None) is not None:
                self.placement.close()
