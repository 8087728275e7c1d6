"""The on-device LLM: llama.cpp through llama-cpp-python (the only module that imports llama_cpp).

Weights stay in the mmapped GGUF (flash-offloaded: paged in on demand, never mlocked). Extra
buffer types (weight repacking, and the AMX path that crashes on some CPUs) are off in low-memory
mode and on CPUs that report AMX. llama.cpp's own log goes to ``logging``.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import threading
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

    def __init__(self, path: Path, n_ctx: int = 4096, n_threads: int = 2, low_memory: bool = False):
        import llama_cpp

        _route_llama_log()
        self.path = Path(path)
        self.id = self.path.name
        self._lock = threading.Lock()
        self.extra_bufts = not (low_memory or cpu_has_amx())
        with _model_params(use_extra_bufts=self.extra_bufts):
            self._llm = llama_cpp.Llama(
                str(self.path), n_ctx=n_ctx, n_threads=n_threads, n_threads_batch=n_threads,
                use_mmap=True, use_mlock=False, verbose=False, seed=0)
        self.n_ctx = self._llm.n_ctx()
        self.template = self._llm.metadata.get("tokenizer.chat_template") or ""

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
        with self._lock:
            self._llm.reset()
            for part in self._llm.create_completion(
                    self.tokens(prompt), max_tokens=max_tokens, temperature=0.0, top_k=40, top_p=0.9,
                    repeat_penalty=1.1, stream=True, stop=STOPS):
                if cancel.is_set():
                    return
                yield part["choices"][0]["text"]

    def close(self) -> None:
        with self._lock:
            if self._llm is not None:
                self._llm.close()
                self._llm = None
