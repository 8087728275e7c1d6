"""The on-device LLM: llama.cpp through llama-cpp-python (the only module that imports llama_cpp).

How the weights are held follows the memory budget (``models/flash.py``): all resident (mmapped,
repacked for speed) when model and KV cache fit; otherwise file-backed, repacking and the whole-file
prefetch off, a pinned set of tensors kept in memory and the rest streamed layer by layer, driven
by following compute node by node (ggml's abort callback counting on a semaphore). Extra buffer types (weight repacking, and the AMX path that
crashes on some CPUs) are also off on CPUs that report AMX. llama.cpp's own log goes to ``logging``.
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


@contextlib.contextmanager
def _model_params(**fields):
    """llama-cpp-python's constructor has no argument for some model params (use_extra_bufts):
    hand it defaults with those fields set while it builds its params."""
    from llama_cpp import llama_cpp as raw

    original = raw.llama_model_default_params

    def patched():
        params = original()
        for name, value in fields.items():
            setattr(params, name, value)
        return params

    with _params_lock:
        raw.llama_model_default_params = patched
        try:
            yield
        finally:
            raw.llama_model_default_params = original


class LlamaLLM:
    """Owns one llama.cpp model; ``close()`` frees it (do not rely on garbage collection)."""

    def __init__(self, path: Path, n_ctx: int = 4096, n_threads: int = 2, low_memory: bool = False,
                 budget: str | int = "auto", policy: bool = True):
        """*budget*: bytes, or a setting like "1.5G", "50%", "auto". *low_memory* forces the
        file-backed mode; *policy* False keeps it plain mmap (pages left to the kernel)."""
        import llama_cpp

        from mneme.models import flash

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
        self.placement = flash.Placement(self.plan, self.path, layout.n_layer) \
            if not resident and policy else None
        prefetch = flash.NoPrefetch(llama_cpp.llama_cpp._lib._name) if self.placement is not None \
            else contextlib.nullcontext()  # plain mmap keeps llama.cpp's own loading
        try:
            with prefetch, _model_params(use_extra_bufts=self.extra_bufts):
                self._llm = llama_cpp.Llama(
                    str(self.path), n_ctx=n_ctx, n_threads=n_threads, n_threads_batch=n_threads,
                    use_mmap=True, use_mlock=False, verbose=False, seed=0, swa_full=True)
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
            prefetch_off=self.prefetch_off, model=self.id)
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
        from mneme.models.flash import read_bytes

        with self._lock:
            # No reset: llama-cpp-python keeps the KV of the prompt's longest common prefix with
            # the last one (the instructions), so only what follows is evaluated. The sliding-window
            # layers of models like Gemma 3 keep every position (swa_full) so that prefix is whole.
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
