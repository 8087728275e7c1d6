"""Flash offload: plain mmap vs Mneme's placement within a memory budget (``make bench-flash``).

A random-weight llama GGUF (Q8_0, ~1.5 GB; written once next to the cache) or ``--model PATH``.
For each budget (a share of the file size) a fresh cgroup gets that memory limit (v1
``memory.limit_in_bytes`` or v2 ``memory.max``); each run is a child process that joins it, drops
the file from the page cache (``POSIX_FADV_DONTNEED``: a cold start), loads the model, evaluates
a short prompt and decodes greedily. Plain mmap (llama.cpp's own loading, repacking off: Mneme's
low_memory mode before the policy) and Mneme (``llm_memory_budget`` = the limit less what the
child used before loading) alternate, three runs each; medians are printed as a Markdown table.

    python tests/bench/flash_bench.py [--model PATH] [--runs 3] [--tokens 16] [--budgets 1.25,1,0.75,0.5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

CHILD = r"""
import json, os, sys, time
cgroup_procs, mode, path, limit, tokens = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
with open(cgroup_procs, "w") as f:
    f.write(str(os.getpid()))
fd = os.open(path, os.O_RDONLY)
os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)   # cold page cache
os.close(fd)
sys.path.insert(0, %r)
from mneme.models.flash import read_bytes
from mneme.models.llama import LlamaLLM

def rss(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024
base = rss("VmRSS:")
t0 = time.perf_counter()
if mode == "plain":
    llm = LlamaLLM(path, n_ctx=512, n_threads=2, low_memory=True, budget=limit - base, policy=False)
else:
    llm = LlamaLLM(path, n_ctx=512, n_threads=2, budget=limit - base)
load = time.perf_counter() - t0
prompt = list(range(100, 108))
t1 = time.perf_counter()
stamps, r0 = [], None
for i, part in enumerate(llm._llm.create_completion(prompt, max_tokens=tokens, temperature=0.0, top_k=1, stream=True)):
    stamps.append(time.perf_counter())
    if r0 is None:
        r0 = read_bytes()
r1 = read_bytes()
n = len(stamps) - 1
status = llm.memory_status()
llm.close()
print(json.dumps({"mode": status["mode"] if mode != "plain" else "plain mmap", "load_s": load,
                  "ttft_s": stamps[0] - t1, "tok_s": n / (stamps[-1] - stamps[0]), "tokens": n,
                  "read_per_token": (r1 - r0) / n, "peak_rss": rss("VmHWM:"), "base_rss": base,
                  "pinned_bytes": status["pinned_bytes"], "locked": status["pinned_locked"],
                  "prefetch_off": status["prefetch_off"]}))
""" % str(ROOT)


def make_model(path: Path, n_layer: int = 30) -> Path:
    """A llama-architecture GGUF with random Q8_0 weights (TinyLlama's shape, more layers) and a
    SentencePiece-style vocabulary of byte tokens and filler pieces."""
    import gguf
    import numpy as np

    if path.exists():
        return path
    n_embd, n_ff, n_head, n_head_kv, n_vocab = 2048, 5632, 32, 4, 32000
    rng = np.random.default_rng(0)
    w = gguf.GGUFWriter(str(path) + ".part", "llama")
    w.add_name("random-llama-q8_0")
    w.add_block_count(n_layer)
    w.add_context_length(2048)
    w.add_embedding_length(n_embd)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head_kv)
    w.add_rope_dimension_count(n_embd // n_head)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0)
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    tokens += [f"\u2581w{i}" for i in range(n_vocab - len(tokens))]
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores([0.0] * 3 + [0.0] * 256 + [-float(i) for i in range(n_vocab - 259)])
    w.add_token_types([2, 3, 3] + [6] * 256 + [1] * (n_vocab - 259))
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    scale = np.float16(0.02 / 73.6).tobytes()  # int8 uniform in [-127,127]: std ~73.6 -> weights ~0.02

    def q8(name, rows, cols):
        blocks = rows * cols // 32
        raw = np.empty((blocks, 34), dtype=np.uint8)
        raw[:, :2] = np.frombuffer(scale, dtype=np.uint8)
        raw[:, 2:] = rng.integers(-127, 128, size=(blocks, 32), dtype=np.int8).view(np.uint8)
        w.add_tensor(name, raw.reshape(rows, cols // 32 * 34), raw_dtype=gguf.GGMLQuantizationType.Q8_0)

    def ones(name, n):
        w.add_tensor(name, np.ones(n, dtype=np.float32))

    q8("token_embd.weight", n_vocab, n_embd)
    for i in range(n_layer):
        ones(f"blk.{i}.attn_norm.weight", n_embd)
        q8(f"blk.{i}.attn_q.weight", n_embd, n_embd)
        q8(f"blk.{i}.attn_k.weight", n_head_kv * n_embd // n_head, n_embd)
        q8(f"blk.{i}.attn_v.weight", n_head_kv * n_embd // n_head, n_embd)
        q8(f"blk.{i}.attn_output.weight", n_embd, n_embd)
        ones(f"blk.{i}.ffn_norm.weight", n_embd)
        q8(f"blk.{i}.ffn_gate.weight", n_ff, n_embd)
        q8(f"blk.{i}.ffn_up.weight", n_ff, n_embd)
        q8(f"blk.{i}.ffn_down.weight", n_embd, n_ff)
    ones("output_norm.weight", n_embd)
    q8("output.weight", n_vocab, n_embd)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    os.replace(str(path) + ".part", path)
    return path


class Cgroup:
    """A memory cgroup with a limit, v1 or v2, removed on exit."""

    def __init__(self, limit: int):
        v2 = Path("/sys/fs/cgroup/cgroup.controllers").exists()
        root = Path("/sys/fs/cgroup") if v2 else Path("/sys/fs/cgroup/memory")
        self.dir = root / f"mneme-flash-{os.getpid()}-{time.monotonic_ns()}"
        self.dir.mkdir()
        (self.dir / ("memory.max" if v2 else "memory.limit_in_bytes")).write_text(str(limit))
        self.v2 = v2

    def peak(self) -> int | None:
        for name in ("memory.max_usage_in_bytes", "memory.peak"):
            p = self.dir / name
            if p.exists():
                return int(p.read_text())
        return None

    def close(self) -> None:
        for _ in range(50):
            try:
                self.dir.rmdir()
                return
            except OSError:
                time.sleep(0.1)


def run_one(mode: str, model: Path, limit: int, tokens: int) -> dict:
    cg = Cgroup(limit)
    try:
        t = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", CHILD, str(cg.dir / "cgroup.procs"), mode,
                               str(model), str(limit), str(tokens)], capture_output=True, text=True)
        wall = time.perf_counter() - t
        if proc.returncode != 0:
            return {"mode": mode, "error": f"exit {proc.returncode}: {proc.stderr.strip()[-300:]}",
                    "wall_s": wall}
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        out["cgroup_peak"] = cg.peak()
        out["wall_s"] = wall
        return out
    finally:
        cg.close()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, help="a GGUF (default: the random Q8_0 llama, made once)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=16)
    ap.add_argument("--budgets", default="1.25,1,0.75,0.5")
    ap.add_argument("--json", type=Path, help="also write every run here")
    ap.add_argument("--modes", default="plain,mneme")
    args = ap.parse_args(argv)
    model = args.model or make_model(Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
                                     / "mneme-bench" / "random-llama-q8_0.gguf")
    model.parent.mkdir(parents=True, exist_ok=True)
    size = model.stat().st_size
    print(f"{model.name}: {size / 2**30:.2f} GiB; {args.runs} runs per mode, {args.tokens} tokens",
          file=sys.stderr)
    rows, everything = [], []
    for share in (float(x) for x in args.budgets.split(",")):
        limit = int(size * share)
        runs: dict[str, list[dict]] = {"plain": [], "mneme": []}
        for i in range(args.runs):
            for mode in args.modes.split(","):
                r = run_one(mode, model, limit, args.tokens)
                r.update(share=share, limit=limit, run=i)
                runs[mode].append(r)
                everything.append(r)
                print(json.dumps(r), file=sys.stderr)
        rows.append((share, limit, runs))
    if args.json:
        args.json.write_text(json.dumps(everything, indent=1))

    def med(rs, key):
        vals = [r[key] for r in rs if key in r and r[key] is not None]
        return statistics.median(vals) if vals else float("nan")

    print(f"\n| budget | mode | decode tok/s | time to first token s | load s | read/token MB "
          f"| peak RSS MB | cgroup peak MB | speed-up |")
    print("|---|---|---|---|---|---|---|---|---|")
    for share, limit, runs in rows:
        base = med(runs["plain"], "tok_s")
        for mode in args.modes.split(","):
            rs = runs[mode]
            ok = [r for r in rs if "error" not in r]
            if not ok:
                print(f"| {share:g}× ({limit / 2**20:.0f} MiB) | {mode} | failed: {rs[0]['error'][:80]} |||||||")
                continue
            label = ok[0]["mode"]
            speed = med(ok, "tok_s")
            print(f"| {share:g}× ({limit / 2**20:.0f} MiB) | {label} | {speed:.2f} | {med(ok, 'ttft_s'):.2f} "
                  f"| {med(ok, 'load_s'):.1f} | {med(ok, 'read_per_token') / 1e6:.0f} "
                  f"| {med(ok, 'peak_rss') / 2**20:.0f} | {med(ok, 'cgroup_peak') / 2**20:.0f} "
                  f"| {speed / base:.2f}× |" + ("" if len(ok) == len(rs) else f" ({len(rs) - len(ok)} failed)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
