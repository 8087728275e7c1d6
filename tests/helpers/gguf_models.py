"""Random-weight GGUF models written with the ``gguf`` package, for the flash-offload tests (tiny,
f32) and its benchmark (1.5 GB, Q8_0): a llama-architecture model, dense or with routed experts
(Mixtral's shape: llama.cpp runs a llama GGUF with ``expert_count`` as Mixtral)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def write_llama(path: str | os.PathLike[str], *, n_layer: int, n_embd: int, n_ff: int, n_head: int,
                n_head_kv: int, n_vocab: int, q8: bool = False, n_expert: int = 0,
                n_expert_used: int = 2, vocab: bool = False, context_length: int = 2048,
                name: str | None = None) -> Path:
    """Write the model to *path* (through ``path.part``, so an interrupted write leaves no model).
    *q8*: Q8_0 weights (int8 uniform, scaled to a std of ~0.02), else f32 normal; norms are ones
    with *q8*. *n_expert*: routed experts of *n_ff* each plus a router, instead of a dense FFN.
    *vocab*: a SentencePiece-style vocabulary of byte tokens and filler pieces, so llama.cpp can
    load and run it; without, the file is only for reading its header."""
    import gguf

    path = Path(path)
    part = Path(str(path) + ".part")
    rng = np.random.default_rng(0)
    w = gguf.GGUFWriter(str(part), "llama")
    if name:
        w.add_name(name)
    w.add_block_count(n_layer)
    w.add_context_length(context_length)
    w.add_embedding_length(n_embd)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head_kv)
    if n_expert:
        w.add_expert_count(n_expert)
        w.add_expert_used_count(n_expert_used)
    if vocab:
        w.add_rope_dimension_count(n_embd // n_head)
        w.add_layer_norm_rms_eps(1e-5)
        w.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0 if q8 else gguf.LlamaFileType.ALL_F32)
        tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
        tokens += [f"\u2581w{i}" for i in range(n_vocab - len(tokens))]
        w.add_tokenizer_model("llama")
        w.add_token_list(tokens)
        w.add_token_scores([0.0] * 259 + [-float(i) for i in range(n_vocab - 259)])
        w.add_token_types([2, 3, 3] + [6] * 256 + [1] * (n_vocab - 259))
        w.add_bos_token_id(1)
        w.add_eos_token_id(2)
        w.add_unk_token_id(0)
    scale = np.float16(0.02 / 73.6).tobytes()  # int8 uniform in [-127,127]: std ~73.6

    def matrix(name: str, *shape: int) -> None:  # shape as numpy sees it: (..., rows, cols)
        if not q8:
            w.add_tensor(name, rng.standard_normal(shape).astype(np.float32))
            return
        *outer, cols = shape
        blocks = int(np.prod(outer)) * cols // 32
        raw = np.empty((blocks, 34), dtype=np.uint8)
        raw[:, :2] = np.frombuffer(scale, dtype=np.uint8)
        raw[:, 2:] = rng.integers(-127, 128, size=(blocks, 32), dtype=np.int8).view(np.uint8)
        w.add_tensor(name, raw.reshape(*outer, cols // 32 * 34), raw_dtype=gguf.GGMLQuantizationType.Q8_0)

    def norm(name: str, n: int) -> None:
        w.add_tensor(name, np.ones(n, dtype=np.float32) if q8 else rng.standard_normal(n).astype(np.float32))

    kv = n_head_kv * n_embd // n_head
    matrix("token_embd.weight", n_vocab, n_embd)
    for i in range(n_layer):
        norm(f"blk.{i}.attn_norm.weight", n_embd)
        matrix(f"blk.{i}.attn_q.weight", n_embd, n_embd)
        matrix(f"blk.{i}.attn_k.weight", kv, n_embd)
        matrix(f"blk.{i}.attn_v.weight", kv, n_embd)
        matrix(f"blk.{i}.attn_output.weight", n_embd, n_embd)
        norm(f"blk.{i}.ffn_norm.weight", n_embd)
        if n_expert:
            w.add_tensor(f"blk.{i}.ffn_gate_inp.weight",
                         rng.standard_normal((n_expert, n_embd)).astype(np.float32))
            matrix(f"blk.{i}.ffn_gate_exps.weight", n_expert, n_ff, n_embd)
            matrix(f"blk.{i}.ffn_up_exps.weight", n_expert, n_ff, n_embd)
            matrix(f"blk.{i}.ffn_down_exps.weight", n_expert, n_embd, n_ff)
        else:
            matrix(f"blk.{i}.ffn_gate.weight", n_ff, n_embd)
            matrix(f"blk.{i}.ffn_up.weight", n_ff, n_embd)
            matrix(f"blk.{i}.ffn_down.weight", n_embd, n_ff)
    norm("output_norm.weight", n_embd)
    matrix("output.weight", n_vocab, n_embd)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    # On disk before it is used: the page cache cannot drop dirty pages, and the flash tests
    # measure what it holds of the file.
    fd = os.open(part, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(part, path)
    return path
