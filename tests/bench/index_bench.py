"""Encrypted persistent index: unlock times, snapshot cost, memory and search latency at scale.

``python tests/bench/index_bench.py --sizes 100000`` builds a memory of synthetic chunks with
stored random vectors (no embedding time), then, each in a fresh process so that memory figures
are its own: the first unlock (no snapshot: rebuilt from the store, then saved), an unlock from
the snapshot, and, side by side, the unlock without a RAM folder (the index rebuilt in memory, as
before issue 15). Prints a Markdown section for BENCHMARKS.md. ``--params`` adds the HNSW
parameter comparison the defaults in core/index.py were chosen by.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("MNEME_PASSPHRASE", "bench passphrase")
os.environ.setdefault("PYTHON_KEYRING_BACKEND", "keyring.backends.fail.Keyring")


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def build(home: str, n: int) -> None:
    from mneme import models
    from mneme.core.memory import open_memory
    from tests.bench.run import synthetic

    emb = models.default_embedder()
    rng = np.random.default_rng(2)
    mem = open_memory(home, embedder=emb, warm=False)
    for start in range(0, n, 50_000):
        mem.import_messages(synthetic(min(50_000, n - start), rng, start))
    for start in range(0, n, 20_000):
        ids = list(range(start + 1, min(n, start + 20_000) + 1))
        vecs = rng.standard_normal((len(ids), emb.dim)).astype(np.float32)
        vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
        mem.store.put_embeddings(emb.id, list(zip(ids, vecs)))
    mem.close()


def unlock(home: str, queries: int) -> dict:
    """One unlock as the app does it, in this (fresh) process."""
    from mneme import models
    from mneme.core.memory import open_memory
    from tests.bench.run import WORDS, ZIPF

    emb = models.default_embedder()
    emb.embed(["warm the embedder up"])  # loaded as the idle app has it, before the clock starts
    rng = np.random.default_rng(3)
    qs = [" ".join(rng.choice(WORDS, 3, p=ZIPF)) for _ in range(queries)]
    base = rss_mb()
    t0 = time.perf_counter()
    mem = open_memory(home, embedder=emb)
    mem.search(qs[0], mode="keyword")
    t_kw = time.perf_counter() - t0
    assert mem.wait_index(stall=600), mem.index_problem()
    t_ready = time.perf_counter() - t0
    source = mem.index.source
    if mem._warm_thread is not None:
        mem._warm_thread.join()  # a rebuilt index is saved right after it is ready
    mem.search("warm up")
    lat = []
    for q in qs:
        t = time.perf_counter()
        mem.search(q, limit=10, mode="hybrid", parse=True)
        lat.append((time.perf_counter() - t) * 1000)
    gc.collect()
    time.sleep(2)
    steady = rss_mb()
    status = mem.index_status()
    t = time.perf_counter()
    saved = mem.save_index()
    t_save = time.perf_counter() - t
    snap = mem.layout.index_snapshot
    size = snap.stat().st_size if snap.exists() else 0
    mem.close()
    return {"source": source, "place": status["place"], "t_kw": t_kw, "t_ready": t_ready,
            "p50": float(np.percentile(lat, 50)), "p95": float(np.percentile(lat, 95)),
            "rss_before_mb": base, "rss_steady_mb": steady,
            "rss_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6,
            "index_resident_mb": status["resident_bytes"] / 1e6, "ram_folder_mb": status["ram_folder_bytes"] / 1e6,
            "vectors": status["vectors"], "save_s": t_save if saved else None, "snapshot_mb": size / 1e6}


def child(phase: str, home: str, env: dict | None = None, queries: int = 60) -> dict:
    out = subprocess.run([sys.executable, __file__, "--phase", phase, "--home", home, "--queries", str(queries)],
                         capture_output=True, text=True, env={**os.environ, **(env or {})}, cwd=ROOT, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def params(n: int) -> list[str]:
    """Chroma HNSW settings side by side on one set of random 384-d vectors (worst case for recall)."""
    import chromadb
    from chromadb.config import Settings

    rng = np.random.default_rng(0)
    v = rng.standard_normal((n, 384)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    qs = v[rng.choice(n, 50)] + 0.3 * rng.standard_normal((50, 384)).astype(np.float32)
    exact = [set(np.argsort(-(v @ (q / np.linalg.norm(q))))[:10].tolist()) for q in qs]
    rows = ["| max_neighbors | ef_construction | batch / sync_threshold | add | reopen + first query | "
            "recall@10 | folder |", "|---|---|---|---|---|---|---|"]
    for m, efc, bs, st in [(16, 100, 100, 1000), (16, 100, 1000, 10000), (16, 50, 100, 1000), (8, 100, 100, 1000),
                           (32, 100, 100, 1000)]:
        d = tempfile.mkdtemp(dir="/dev/shm", prefix="mneme-bench-")
        s = Settings(anonymized_telemetry=False, allow_reset=False)
        c = chromadb.PersistentClient(path=d, settings=s)
        col = c.create_collection("mneme-index", embedding_function=None, configuration={"hnsw": {
            "space": "cosine", "max_neighbors": m, "ef_construction": efc, "batch_size": bs, "sync_threshold": st}})
        t = time.perf_counter()
        for i in range(0, n, 4000):
            col.upsert(ids=[str(j) for j in range(i, min(n, i + 4000))], embeddings=v[i:i + 4000])
        add = n / (time.perf_counter() - t)
        c.close()
        t = time.perf_counter()
        c = chromadb.PersistentClient(path=d, settings=s)
        col = c.get_collection("mneme-index")
        col.query(query_embeddings=[qs[0]], n_results=10)
        reopen = time.perf_counter() - t
        got = [set(int(i) for i in col.query(query_embeddings=[q], n_results=10)["ids"][0]) for q in qs]
        c.close()
        size = sum(p.stat().st_size for p in Path(d).rglob("*") if p.is_file())
        subprocess.run(["rm", "-rf", d], check=True)
        recall = sum(len(a & b) for a, b in zip(exact, got)) / (10 * len(qs))
        rows.append(f"| {m} | {efc} | {bs} / {st} | {add:,.0f} vectors/s | {reopen:.2f} s | {recall:.2f} | "
                    f"{size / 1e6:.0f} MB |")
    return rows


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="100000")
    parser.add_argument("--phase", default="")
    parser.add_argument("--home", default="", help="a memory built already (--phase build) to unlock")
    parser.add_argument("--queries", type=int, default=60)
    parser.add_argument("--params", type=int, default=0, help="also compare HNSW settings at this many vectors")
    parser.add_argument("--no-baseline", action="store_true", help="skip the rebuild-in-memory comparison")
    args = parser.parse_args()
    if args.phase == "unlock":
        print(json.dumps(unlock(args.home, args.queries)))
        return 0
    if args.phase == "build":
        build(args.home, int(args.sizes))
        return 0
    report = [f"## {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC — Encrypted persistent index — "
              f"{platform.node()} ({os.cpu_count()} cores, Python {platform.python_version()}; "
              f"load average {os.getloadavg()[0]:.1f} when it started: the machine is shared)",
              "", "`python tests/bench/index_bench.py " + " ".join(sys.argv[1:]) + "`", "",
              "| chunks | unlock | → keyword-searchable | → fully meaning-searchable | hybrid p50 | p95 | "
              "snapshot write | snapshot size | RSS steady | RSS peak | index in memory | RAM folder |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for n in [int(s) for s in args.sizes.split(",")]:
        home = args.home or tempfile.mkdtemp(prefix="mneme-bench-")
        if not args.home:
            t = time.perf_counter()
            subprocess.run([sys.executable, __file__, "--phase", "build", "--home", home, "--sizes", str(n)],
                           cwd=ROOT, check=True)
            print(f"built {n} in {time.perf_counter() - t:.0f} s", file=sys.stderr, flush=True)
        runs = [("first (no snapshot: rebuilt, then saved)", {}), ("from the snapshot", {})]
        if not args.no_baseline:
            runs.append(("no RAM folder (rebuilt in memory, as before)", {"MNEME_INDEX_RAM": ""}))
        for name, env in runs:
            r = child("unlock", home, env, queries=args.queries)
            print(name, r, file=sys.stderr, flush=True)
            save = f"{r['save_s']:.1f} s" if r["save_s"] is not None else "—"
            snap = f"{r['snapshot_mb']:.0f} MB" if r["save_s"] is not None else "—"
            report.append(f"| {n:,} | {name} | {r['t_kw']:.2f} s | {r['t_ready']:.1f} s | {r['p50']:.0f} ms | "
                          f"{r['p95']:.0f} ms | {save} | {snap} | {r['rss_steady_mb']:.0f} MB | "
                          f"{r['rss_peak_mb']:.0f} MB | {r['index_resident_mb']:.0f} MB | {r['ram_folder_mb']:.0f} MB |")
            print(report[-1], file=sys.stderr, flush=True)
        if not args.home:
            subprocess.run(["rm", "-rf", home], check=True)
    if args.params:
        report += ["", f"HNSW settings ({args.params:,} random 384-d vectors, Chroma PersistentClient in /dev/shm):",
                   "", *params(args.params)]
    print("\n".join(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
