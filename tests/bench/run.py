"""``make bench``: Mneme's speed, memory and retrieval-quality figures, with real components.

Prints a Markdown report (date, machine, figures) to stdout; paste it into BENCHMARKS.md.
Medians and p95 over repeated runs; every home is a fresh temporary folder.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from mneme import models  # noqa: E402
from mneme.core.memory import open_memory  # noqa: E402
from mneme.core.records import Message  # noqa: E402
from tests.bench.dataset import build  # noqa: E402
from tests.bench.synthetic import WORDS, ZIPF, build_memory  # noqa: E402
from tests.bench.synthetic import messages as synthetic  # noqa: E402,F401 - app_bench uses it

os.environ.setdefault("MNEME_PASSPHRASE", "bench passphrase")
os.environ.setdefault("PYTHON_KEYRING_BACKEND", "keyring.backends.fail.Keyring")


def pct(values, q):
    return float(np.percentile(values, q))


def fresh_home() -> str:
    return tempfile.mkdtemp(prefix="mneme-bench-")


def bench_quality(emb, report):
    messages, questions = build()
    home = fresh_home()
    mem = open_memory(home, embedder=emb)
    mem.import_messages([Message(m["id"], m["conversation"], datetime.fromisoformat(m["time"]).timestamp(),
                                 m["speaker"], m["text"]) for m in messages])
    mem.embed_pending()
    mem.wait_ready()
    ext = {}
    rows = []
    for mode, k in (("keyword", 10), ("vector", 10), ("hybrid", 10), ("hybrid", 60)):
        mem.retriever.rrf_k = k
        r5 = r10 = 0
        for q in questions:
            hits = mem.search(q["query"], limit=10, mode=mode, parse=False).hits
            ids = []
            for h in hits:
                sid = h.source_ids[0]
                ext.setdefault(sid, mem.store.source(sid).external_id)
                ids.append(ext[sid])
            r5 += any(e in ids[:5] for e in q["evidence"])
            r10 += any(e in ids[:10] for e in q["evidence"])
        rows.append((mode if mode != "hybrid" else f"hybrid (RRF k={k})", r5 / len(questions),
                     r10 / len(questions)))
    mem.close()
    report.append(f"\n### Retrieval quality ({len(questions)} questions, {len(messages)} messages, "
                  "tests/bench/dataset.py)\n\n| method | recall@5 | recall@10 |\n|---|---|---|")
    for mode, r5, r10 in rows:
        report.append(f"| {mode} | {r5:.2f} | {r10:.2f} |")


def bench_import(emb, report, n=20_000):
    rng = np.random.default_rng(1)
    msgs = synthetic(n, rng)
    mem = open_memory(fresh_home(), embedder=emb, warm=False)
    t = time.perf_counter()
    mem.import_messages(msgs)
    imp = time.perf_counter() - t
    sample = [m.text for m in msgs[:2000]]
    t = time.perf_counter()
    emb.embed(sample)
    em = time.perf_counter() - t
    mem.close()
    report.append(f"\n### Import\n\n| what | figure |\n|---|---|\n"
                  f"| import into the encrypted store ({n} msgs, one transaction) | {n / imp:,.0f} msgs/s |\n"
                  f"| embedding (MiniLM int8 ONNX, batches of 32) | {len(sample) / em:,.0f} chunks/s |")


def bench_scale(emb, report, sizes):
    report.append("\n### Search and unlock at scale (synthetic chunks with stored vectors)\n\n"
                  "| chunks | unlock → keyword-searchable | unlock → fully indexed | hybrid search p50 | "
                  "p95 | keyword-only p50 | p95 |\n|---|---|---|---|---|---|---|")
    rng = np.random.default_rng(2)
    queries = [" ".join(rng.choice(WORDS, 3, p=ZIPF)) for _ in range(60)]
    for n in sizes:
        home = fresh_home()
        build_memory(home, n, emb, rng)
        t0 = time.perf_counter()
        mem = open_memory(home, embedder=emb)
        mem.search(queries[0], mode="keyword")
        t_kw = time.perf_counter() - t0
        mem.wait_ready()
        t_ready = time.perf_counter() - t0
        mem.search("warm up")
        lat = {"hybrid": [], "keyword": []}
        for mode in lat:
            for q in queries:
                t = time.perf_counter()
                mem.search(q, limit=10, mode=mode, parse=True)
                lat[mode].append((time.perf_counter() - t) * 1000)
        mem.close()
        report.append(f"| {n:,} | {t_kw:.2f} s | {t_ready:.1f} s | {pct(lat['hybrid'], 50):.1f} ms | "
                      f"{pct(lat['hybrid'], 95):.1f} ms | {pct(lat['keyword'], 50):.1f} ms | "
                      f"{pct(lat['keyword'], 95):.1f} ms |")


def bench_ask(emb, report):
    from mneme.core.assistant import Assistant
    from mneme.models.llama import LlamaLLM
    from mneme.models.registry import default_model_path

    messages, _ = build(500)
    mem = open_memory(fresh_home(), embedder=emb)
    mem.import_messages([Message(m["id"], m["conversation"], datetime.fromisoformat(m["time"]).timestamp(),
                                 m["speaker"], m["text"]) for m in messages])
    mem.embed_pending()
    mem.wait_ready()
    t = time.perf_counter()
    llm = LlamaLLM(default_model_path(), n_ctx=4096, n_threads=2)
    load = time.perf_counter() - t
    ttft, tps = [], []
    for q in ["What is the cabin wifi password?", "When is the school play?",
              "Which desk did I choose?", "Where is the team retreat?", "What gift does my mother want?"]:
        a = Assistant(mem, llm, max_answer_tokens=64).ask(q, remember=False)
        ttft.append(a.first_token_s)
        gen = a.seconds - a.first_token_s
        tps.append((a.tokens - 1) / gen if gen > 0 and a.tokens > 1 else float("nan"))
    llm.close()
    mem.close()
    report.append(f"\n### Ask (Gemma 3 270M Q4_K_M, n_ctx 4096, 2 threads, up to 12 excerpts)\n\n"
                  f"| what | median |\n|---|---|\n| model load (mmap) | {load:.2f} s |\n"
                  f"| time to first token (retrieval + prompt) | {statistics.median(ttft):.2f} s |\n"
                  f"| generation | {statistics.median([x for x in tps if x == x] or [0]):.1f} tokens/s |")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--skip", default="", help="comma list of: quality,import,scale,ask")
    args = parser.parse_args()
    skip = set(args.skip.split(","))
    emb = models.default_embedder()
    report = [f"## {datetime.now(timezone.utc):%Y-%m-%d} — {platform.node()} "
              f"({os.cpu_count()} cores, {platform.processor() or platform.machine()}, "
              f"Python {platform.python_version()})"]
    if "quality" not in skip:
        bench_quality(emb, report)
    if "import" not in skip:
        bench_import(emb, report)
    if "scale" not in skip:
        bench_scale(emb, report, [int(s) for s in args.sizes.split(",")])
    if "ask" not in skip:
        bench_ask(emb, report)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    report.append(f"\nPeak RSS of the whole benchmark process: {rss:,.0f} MB")
    print("\n".join(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
