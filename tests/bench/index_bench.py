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
    from tests.bench.synthetic import build_memory

    build_memory(home, n, models.default_embedder(), np.random.default_rng(2))


IDLE_S = 5.0  # the embedder's idle release in the benchmark (the app's is models.embedder.IDLE_RELEASE)


def legacy_settings() -> None:
    """What the code did before issue 15's second round, for a side-by-side row: onnxruntime's
    arena and memory pattern on and the session kept, a 64 MiB SQLCipher page cache, no heap
    trims, and the index locked (searches waiting) for the whole snapshot write."""
    import functools

    from mneme.core import heap, index, store

    store.CACHE_KIB = 65536
    heap.trim = lambda: False  # no heap trim after warm-up and saves
    save = index.Index.save

    @functools.wraps(save)
    def locked_save(self, *args, **kwargs):
        with self._lock:
            return save(self, *args, **kwargs)

    index.Index.save = locked_save


def searches_during(work, qs, mem, starts: list | None = None) -> tuple[float, list[float]]:
    """Run *work* while another thread searches (hybrid) without pause; (its seconds, latencies).
    *starts* gets each search's start time (perf_counter)."""
    import threading

    lat: list[float] = []
    done = threading.Event()

    def search() -> None:
        i = 0
        while not done.is_set():
            t = time.perf_counter()
            mem.search(qs[i % len(qs)], limit=10, mode="hybrid", parse=True)
            lat.append((time.perf_counter() - t) * 1000)
            if starts is not None:
                starts.append(t)
            i += 1

    th = threading.Thread(target=search)
    th.start()
    time.sleep(0.5)
    t = time.perf_counter()
    try:
        work()
    finally:
        took = time.perf_counter() - t
        done.set()
        th.join()
    return took, lat


def timed(cls, name: str, spans: list) -> None:
    """Record (start, end) of each call of cls.name in *spans*."""
    import functools

    real = getattr(cls, name)

    @functools.wraps(real)
    def wrapper(*args, **kwargs):
        t = time.perf_counter()
        try:
            return real(*args, **kwargs)
        finally:
            spans.append((t, time.perf_counter()))

    setattr(cls, name, wrapper)


def unlock(home: str, queries: int, legacy: bool = False, forget: str = "") -> dict:
    """One unlock as the app does it, in this (fresh) process."""
    from mneme.models.embedder import MiniLMEmbedder
    from mneme.core.memory import open_memory
    from tests.bench.synthetic import WORDS, ZIPF

    if legacy:
        legacy_settings()
    emb = MiniLMEmbedder(idle_release=0, lean=False) if legacy else MiniLMEmbedder(idle_release=IDLE_S)
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
    lat, kw = [], []
    for q in qs:
        t = time.perf_counter()
        mem.search(q, limit=10, mode="hybrid", parse=True)
        lat.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        mem.search(q, limit=10, mode="keyword", parse=True)
        kw.append((time.perf_counter() - t) * 1000)
    gc.collect()
    time.sleep(2)
    steady = rss_mb()
    time.sleep(IDLE_S + 1)  # the embedder is let go after IDLE_S without use (not in legacy)
    gc.collect()
    idle = rss_mb()
    released = not getattr(emb, "loaded", True)
    t = time.perf_counter()
    mem.search(qs[1], limit=10, mode="hybrid", parse=True)  # the embedder is made again if it was let go
    t_after_idle = (time.perf_counter() - t) * 1000
    status = mem.index_status()
    saved: list[bool] = []
    t_save, during = searches_during(lambda: saved.append(mem.save_index()), qs, mem)
    snap = mem.layout.index_snapshot
    size = snap.stat().st_size if snap.exists() and saved[0] else 0
    out = {"source": source, "place": status["place"], "t_kw": t_kw, "t_ready": t_ready,
           "p50": float(np.percentile(lat, 50)), "p95": float(np.percentile(lat, 95)),
           "kw_p50": float(np.percentile(kw, 50)), "kw_p95": float(np.percentile(kw, 95)),
           "rss_before_mb": base, "rss_steady_mb": steady, "rss_idle_mb": idle,
           "index_resident_mb": status["resident_bytes"] / 1e6, "ram_folder_mb": status["ram_folder_bytes"] / 1e6,
           "vectors": status["vectors"], "save_s": t_save, "snapshot_mb": size / 1e6,
           "save_searches": len(during), "save_search_max_ms": max(during, default=0.0),
           "embedder_loads": emb.loads, "released_when_idle": released, "search_after_idle_ms": t_after_idle,
           "rss_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6}
    if forget:
        from mneme.core.index import Index
        from mneme.core.store import Store

        spans: dict[str, list] = {"store": [], "compact": [], "save": []}
        timed(Store, "forget", spans["store"])
        timed(Index, "_compact", spans["compact"])
        timed(Index, "save", spans["save"])
        doomed = mem.forget_preview(app=forget)["chunks"]
        starts: list[float] = []
        t_forget, during = searches_during(lambda: mem.forget(app=forget), qs, mem, starts)
        c0, c1 = spans["compact"][0] if spans["compact"] else (0.0, 0.0)
        in_compact = [ms for t, ms in zip(starts, during) if c0 <= t <= c1]
        out.update(forget_chunks=doomed, forget_s=t_forget, forget_searches=len(during),
                   forget_search_max_ms=max(during, default=0.0),
                   store_forget_s=sum(b - a for a, b in spans["store"]),
                   compact_s=sum(b - a for a, b in spans["compact"]), compactions=len(spans["compact"]),
                   index_save_s=sum(b - a for a, b in spans["save"]),
                   compact_searches=len(in_compact), compact_search_max_ms=max(in_compact, default=0.0),
                   forget_snapshot_mb=snap.stat().st_size / 1e6 if snap.exists() else 0,
                   forget_rss_peak_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6)
    mem.close()
    return out


def child(phase: str, home: str, env: dict | None = None, queries: int = 60, flags: tuple = ()) -> dict:
    out = subprocess.run([sys.executable, __file__, "--phase", phase, "--home", home, "--queries", str(queries),
                          *flags], capture_output=True, text=True, env={**os.environ, **(env or {})}, cwd=ROOT)
    if out.returncode:
        raise RuntimeError(f"{phase} failed: {out.stderr[-3000:]}")
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
    parser.add_argument("--legacy", action="store_true", help="(unlock phase) the settings before round two")
    parser.add_argument("--forget", default="", help="(unlock phase) then forget this conversation")
    args = parser.parse_args()
    if args.phase == "unlock":
        print(json.dumps(unlock(args.home, args.queries, legacy=args.legacy, forget=args.forget)))
        return 0
    if args.phase == "build":
        build(args.home, int(args.sizes))
        return 0
    report = [f"## {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC — Encrypted persistent index — "
              f"{platform.node()} ({os.cpu_count()} cores, Python {platform.python_version()}; "
              f"load average {os.getloadavg()[0]:.1f} when it started: the machine is shared)",
              "", "`python tests/bench/index_bench.py " + " ".join(sys.argv[1:]) + "`", "",
              "| chunks | unlock | → keyword-searchable | → fully meaning-searchable | hybrid p50 | p95 | "
              "keyword p50 | p95 | snapshot write | searches during it (slowest) | snapshot size | RSS steady | "
              "RSS idle | RSS peak | index in memory | RAM folder |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    forgets, idle_notes = [], []
    for n in [int(s) for s in args.sizes.split(",")]:
        home = args.home or tempfile.mkdtemp(prefix="mneme-bench-")
        if not args.home:
            t = time.perf_counter()
            subprocess.run([sys.executable, __file__, "--phase", "build", "--home", home, "--sizes", str(n)],
                           cwd=ROOT, check=True)
            print(f"built {n} in {time.perf_counter() - t:.0f} s", file=sys.stderr, flush=True)
        runs = [("first (no snapshot: rebuilt, then saved)", {}, ()),
                ("from the snapshot, before round two (legacy settings)", {}, ("--legacy",))]
        if not args.no_baseline:
            runs.append(("no RAM folder (rebuilt in memory, as before)", {"MNEME_INDEX_RAM": ""}, ()))
        runs.append(("from the snapshot, now; then a forget", {}, ("--forget", "conv 7")))  # last: it changes the memory
        for name, env, flags in runs:
            r = child("unlock", home, env, queries=args.queries, flags=flags)
            print(name, r, file=sys.stderr, flush=True)
            saved = r["snapshot_mb"] > 0
            save = f"{r['save_s']:.1f} s" if saved else "—"
            during = f"{r['save_searches']} ({r['save_search_max_ms']:,.0f} ms)" if saved else "—"
            snap = f"{r['snapshot_mb']:.0f} MB" if saved else "—"
            report.append(f"| {n:,} | {name} | {r['t_kw']:.2f} s | {r['t_ready']:.1f} s | {r['p50']:.0f} ms | "
                          f"{r['p95']:.0f} ms | {r['kw_p50']:.0f} ms | {r['kw_p95']:.0f} ms | {save} | {during} | "
                          f"{snap} | {r['rss_steady_mb']:.0f} MB | {r['rss_idle_mb']:.0f} MB | "
                          f"{r['rss_peak_mb']:.0f} MB | {r['index_resident_mb']:.0f} MB | {r['ram_folder_mb']:.0f} MB |")
            print(report[-1], file=sys.stderr, flush=True)
            idle_notes.append(f"{name}: embedder let go when idle: {r['released_when_idle']}; the first hybrid "
                              f"search after that took {r['search_after_idle_ms']:,.0f} ms; RSS before the index "
                              f"was opened (embedder loaded): {r['rss_before_mb']:.0f} MB")
            if "forget_s" in r:
                forgets.append(f"| {n:,} | {r['forget_chunks']:,} | {r['forget_s']:.1f} s | {r['store_forget_s']:.1f} s | "
                               f"{r['compact_s']:.1f} s ({r['compactions']}) | {r['index_save_s']:.1f} s | "
                               f"{r['forget_searches']} ({r['forget_search_max_ms']:,.0f} ms) | "
                               f"{r['compact_searches']} ({r['compact_search_max_ms']:,.0f} ms) | "
                               f"{r['forget_snapshot_mb']:.0f} MB | {r['forget_rss_peak_mb']:.0f} MB |")
        if not args.home:
            subprocess.run(["rm", "-rf", home], check=True)
    report += ["", *[f"- {n}" for n in idle_notes]]
    if forgets:
        report += ["", "A forget (one conversation), its store deletion, the fresh graph (`Index._compact`) and "
                   "the new snapshot, while another thread searches:", "",
                   "| chunks | forgotten | forget → new snapshot | of it: store | fresh graph (`_compact`, times) | "
                   "index save incl. the graph | searches meanwhile (slowest) | of them during the graph (slowest) | "
                   "snapshot size | RSS peak |", "|---|---|---|---|---|---|---|---|---|---|", *forgets]
    if args.params:
        report += ["", f"HNSW settings ({args.params:,} random 384-d vectors, Chroma PersistentClient in /dev/shm):",
                   "", *params(args.params)]
    print("\n".join(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
