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

    build_memory(home, n, models.default_embedder(), np.random.default_rng(2), at_once=n > 200_000)


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


def searches_during(work, qs, mem, starts: list | None = None, vectors=None, vector_lat: list | None = None,
                    ) -> tuple[float, list[float]]:
    """Run *work* while another thread searches (hybrid) without pause; (its seconds, latencies).
    *starts* gets each search's start time (perf_counter). With *vectors*, a third thread runs
    vector-only queries on the index (latencies into *vector_lat*): they need neither the store
    nor the embedder, so they show what the index alone makes wait."""
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

    def query() -> None:
        i = 0
        while not done.is_set():
            t = time.perf_counter()
            mem.index.query(vectors[i % len(vectors)], 10)
            vector_lat.append((time.perf_counter() - t) * 1000)
            i += 1
            time.sleep(0.02)

    threads = [threading.Thread(target=search)] + ([threading.Thread(target=query)] if vectors is not None else [])
    for th in threads:
        th.start()
    time.sleep(0.5)
    t = time.perf_counter()
    try:
        work()
    finally:
        took = time.perf_counter() - t
        done.set()
        for th in threads:
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


def unlock(home: str, queries: int, legacy: bool = False, forget: str = "", keep_graph: bool = False) -> dict:
    """One unlock as the app does it, in this (fresh) process."""
    from mneme.models.embedder import MiniLMEmbedder
    from mneme.core.memory import open_memory
    from tests.bench.synthetic import WORDS, ZIPF

    from mneme.core import memory as memory_module

    memory_module.IDLE_RELEASE = 0 if legacy or keep_graph else IDLE_S  # the graph let go when idle (round three)
    if legacy:
        legacy_settings()
    emb = MiniLMEmbedder(idle_release=0, lean=False) if legacy else MiniLMEmbedder(idle_release=IDLE_S)
    emb.embed(["warm the embedder up"])  # loaded as the idle app has it, before the clock starts
    rng = np.random.default_rng(3)
    qs = [" ".join(rng.choice(WORDS, 3, p=ZIPF)) for _ in range(queries)]
    from mneme.core import snapshot as snapshot_module
    from mneme.core.index import Index

    phases: dict[str, list] = {"read": [], "load": []}
    timed(snapshot_module, "read", phases["read"])  # the snapshot decrypted into the RAM folder
    timed(Index, "load", phases["load"])             # …and opened (Chroma's client, its count)
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
    t = time.perf_counter()
    mem.search("warm up")  # the first vector query: Chroma reads the HNSW files now if not before
    t_first = time.perf_counter() - t
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
    status = mem.index_status()  # (while the graph is held)
    time.sleep(IDLE_S + 1)  # the embedder and the index's graph are let go after IDLE_S without use (not in legacy)
    gc.collect()
    idle = rss_mb()
    idle_folder = snapshot_folder_mb(mem)
    released = not getattr(emb, "loaded", True)
    index_released = mem.index.released
    t = time.perf_counter()
    mem.search(qs[1], limit=10, mode="hybrid", parse=True)  # the embedder and graph are made again if let go
    t_after_idle = (time.perf_counter() - t) * 1000
    time.sleep(IDLE_S + 1)
    probe = mem.embedder.embed([qs[3]])[0]  # (the embedder made again first: the query below is the index's alone)
    t = time.perf_counter()
    mem.index.query(probe, 10)  # opens the collection again and reads the graph
    reload_s = time.perf_counter() - t if index_released else 0.0
    time.sleep(IDLE_S + 1)
    index_released_again = mem.index.released
    t = time.perf_counter()
    mem.prepare_search()  # the overlay opens; the query comes a moment later, as typed
    time.sleep(1.0)
    t1 = time.perf_counter()
    mem.search(qs[2], limit=10, mode="hybrid", parse=True)
    t_prepared = (time.perf_counter() - t1) * 1000
    saved: list[bool] = []
    t_save, during = searches_during(lambda: saved.append(mem.save_index()), qs, mem)
    snap = mem.layout.index_snapshot
    size = snap.stat().st_size if snap.exists() and saved[0] else 0
    out = {"source": source, "place": status["place"], "t_kw": t_kw, "t_ready": t_ready,
           "first_search_s": t_first, "read_s": sum(b - a for a, b in phases["read"]),
           "load_s": sum(b - a for a, b in phases["load"]),
           "p50": float(np.percentile(lat, 50)), "p95": float(np.percentile(lat, 95)),
           "kw_p50": float(np.percentile(kw, 50)), "kw_p95": float(np.percentile(kw, 95)),
           "rss_before_mb": base, "rss_steady_mb": steady, "rss_idle_mb": idle,
           "index_resident_mb": status["resident_bytes"] / 1e6, "ram_folder_mb": status["ram_folder_bytes"] / 1e6,
           "vectors": status["vectors"], "save_s": t_save, "snapshot_mb": size / 1e6,
           "save_searches": len(during), "save_search_max_ms": max(during, default=0.0),
           "embedder_loads": emb.loads, "released_when_idle": released, "search_after_idle_ms": t_after_idle,
           "index_released_when_idle": index_released, "ram_folder_idle_mb": idle_folder,
           "index_reload_s": reload_s, "index_released_again": index_released_again,
           "search_1s_after_prepare_ms": t_prepared,
           "rss_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6}
    if forget:
        from mneme.core import chroma_scrub
        from mneme.core.index import Index
        from mneme.core.store import Store

        spans: dict[str, list] = {"store": [], "compact": [], "save": [], "scrub": []}
        timed(Store, "forget", spans["store"])
        timed(Index, "_compact", spans["compact"])
        timed(Index, "save", spans["save"])
        timed(chroma_scrub, "scrub", spans["scrub"])
        doomed = mem.forget_preview(app=forget)["chunks"]
        with mem.store.transaction() as db:
            doomed_ids = [cid for (cid,) in db.execute(
                "SELECT c.id FROM chunks c JOIN sources s ON s.id = c.source_id WHERE s.conversation = ? "
                "ORDER BY c.id LIMIT 50", (forget,))]
        _, doomed_vecs = mem.store.vectors_of(mem.embedder.id, doomed_ids, mem.embedder.dim)
        starts: list[float] = []
        vector_lat: list[float] = []
        t_forget, during = searches_during(lambda: mem.forget(app=forget), qs, mem, starts,
                                           vectors=np.stack(doomed_vecs), vector_lat=vector_lat)
        returned = sum(len(set(doomed_ids) & {cid for cid, _ in mem.index.query(v, 10)}) for v in doomed_vecs)
        c0, c1 = spans["compact"][0] if spans["compact"] else (0.0, 0.0)
        in_compact = [ms for t, ms in zip(starts, during) if c0 <= t <= c1]
        out.update(forget_chunks=doomed, forget_s=t_forget, forget_searches=len(during),
                   forget_search_max_ms=max(during, default=0.0),
                   store_forget_s=sum(b - a for a, b in spans["store"]),
                   compact_s=sum(b - a for a, b in spans["compact"]), compactions=len(spans["compact"]),
                   index_save_s=sum(b - a for a, b in spans["save"]),
                   compact_searches=len(in_compact), compact_search_max_ms=max(in_compact, default=0.0),
                   scrub_s=sum(b - a for a, b in spans["scrub"]), dead=mem.index.dead,
                   vector_queries=len(vector_lat), vector_query_max_ms=max(vector_lat, default=0.0),
                   vector_query_p50_ms=float(np.percentile(vector_lat, 50)) if vector_lat else 0.0,
                   forgotten_returned=returned, forgotten_probed=len(doomed_ids),
                   forget_snapshot_mb=snap.stat().st_size / 1e6 if snap.exists() else 0,
                   forget_rss_peak_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6)
    mem.close()
    return out


def legacy_neighbour_chunks(self, chunk_ids, since=None, until=None, app=None, kinds=None):
    """``Store.neighbour_chunks`` before the fourth round (its SQL walked a conversation's index
    from one end to the message), for a side-by-side row."""
    from mneme.core.store import _source_filter

    where, args = _source_filter(since, until, app, kinds)
    cond = (" AND " + " AND ".join(where)) if where else ""
    out: dict[int, list[int]] = {}
    for cid in chunk_ids:
        rows = self._q(
            "SELECT x.kind, x.conversation, x.time, x.id FROM chunks c JOIN sources x ON x.id = c.source_id "
            "WHERE c.id = ? AND x.conversation != '' AND x.kind != 'frame'", (cid,))
        if not rows:
            continue
        kind, conv, t, sid = rows[0]
        got = []
        for op, order in (("<", "DESC"), (">", "ASC")):
            got += [r[0] for r in self._q(
                "SELECT c.id FROM sources s JOIN chunks c ON c.source_id = s.id AND c.seq = 0 "
                f"WHERE s.conversation = ? AND s.kind = ? AND (s.time {op} ? OR (s.time = ? AND s.id {op} ?))"
                f"{cond} ORDER BY s.time {order}, s.id {order} LIMIT 1", [conv, kind, t, t, sid, *args])]
        out[cid] = got
    return out


def stages(home: str, queries: int) -> dict:
    """Hybrid search at scale, stage by stage (`--phase search`): an unlock from the snapshot, then
    *queries* hybrid searches with today's ``Store.neighbour_chunks`` and the one before the
    fourth round taking turns, query by query, in this one process; each search's time in the
    keyword search, the embedding, the vector query, the neighbours and the hits."""
    from mneme.core.index import Index
    from mneme.core.memory import open_memory
    from mneme.core.store import Store
    from mneme.models.embedder import MiniLMEmbedder
    from tests.bench.synthetic import WORDS, ZIPF

    emb = MiniLMEmbedder(idle_release=0)
    emb.embed(["warm the embedder up"])
    mem = open_memory(home, embedder=emb)
    assert mem.wait_index(stall=600), mem.index_problem()
    mem.index.idle_release = 0
    mem.search("warm up")
    spans: dict[str, list] = {k: [] for k in ("keyword", "embed", "vector", "neighbours", "hits")}
    timed(Store, "keyword_search", spans["keyword"])
    timed(type(emb), "embed", spans["embed"])
    timed(Index, "query", spans["vector"])
    timed(Store, "hits", spans["hits"])
    now_neighbours = Store.neighbour_chunks
    rng = np.random.default_rng(4)
    qs = [" ".join(rng.choice(WORDS, 3, p=ZIPF)) for _ in range(queries)]
    rows: dict[str, dict[str, list[float]]] = {v: {k: [] for k in ("total", *spans)} for v in ("now", "before")}
    for i, q in enumerate(qs):
        for variant in (("now", "before") if i % 2 else ("before", "now")):
            Store.neighbour_chunks = now_neighbours if variant == "now" else legacy_neighbour_chunks
            timed(Store, "neighbour_chunks", spans["neighbours"])
            for v in spans.values():
                v.clear()
            t = time.perf_counter()
            mem.search(q, limit=10, mode="hybrid", parse=True)
            rows[variant]["total"].append((time.perf_counter() - t) * 1000)
            for k, v in spans.items():
                rows[variant][k].append(sum(b - a for a, b in v) * 1000)
    counts = []
    for _ in range(20):  # every vector query asks Chroma for the count first (Index._query)
        t = time.perf_counter()
        vectors = mem.index.count()
        counts.append((time.perf_counter() - t) * 1000)
    mem.close()
    return {variant: {k: (float(np.percentile(v, 50)), float(np.percentile(v, 95))) for k, v in got.items()}
            for variant, got in rows.items()} | {"vectors": vectors, "queries": queries,
                                                     "count_ms": float(np.median(counts))}


def snapshot_folder_mb(mem) -> float:
    from mneme.core import snapshot

    return snapshot.folder_bytes(mem.index.folder) / 1e6


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
    parser.add_argument("--runs", default="first,legacy,memory,now",
                        help="which unlocks, in this order: first (rebuilt, then saved), legacy, memory "
                             "(no RAM folder), kept (from the snapshot, graph kept when idle), snap (from the "
                             "snapshot), now (from the snapshot, then a forget "
                             "of --forget-conv)")
    parser.add_argument("--keep-graph", action="store_true", help="(unlock phase) no idle release of the graph")
    parser.add_argument("--forget-conv", default="conv 7", help="the conversation the last run forgets")
    args = parser.parse_args()
    if args.phase == "unlock":
        print(json.dumps(unlock(args.home, args.queries, legacy=args.legacy, forget=args.forget,
                                keep_graph=args.keep_graph)))
        return 0
    if args.phase == "search":
        print(json.dumps(stages(args.home, args.queries)))
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
    forgets, idle_notes, phase_notes = [], [], []
    for n in [int(s) for s in args.sizes.split(",")]:
        home = args.home or tempfile.mkdtemp(prefix="mneme-bench-")
        if not args.home:
            t = time.perf_counter()
            subprocess.run([sys.executable, __file__, "--phase", "build", "--home", home, "--sizes", str(n)],
                           cwd=ROOT, check=True)
            print(f"built {n} in {time.perf_counter() - t:.0f} s", file=sys.stderr, flush=True)
        known = {"first": ("first (no snapshot: rebuilt, then saved)", {}, ()),
                 "legacy": ("from the snapshot, before round two (legacy settings)", {}, ("--legacy",)),
                 "memory": ("no RAM folder (rebuilt in memory, as before)", {"MNEME_INDEX_RAM": ""}, ()),
                 "kept": ("from the snapshot, the graph kept when idle (round two)", {}, ("--keep-graph",)),
                 "snap": ("from the snapshot, now", {}, ()),
                 "now": ("from the snapshot, now; then a forget", {}, ("--forget", args.forget_conv))}
        wanted = [r for r in args.runs.split(",") if r and not (r == "memory" and args.no_baseline)]
        runs = [known[r] for r in wanted]  # "now" last: its forget changes the memory
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
            idle_notes.append(f"{name}: embedder let go when idle: {r['released_when_idle']}, index graph: "
                              f"{r.get('index_released_when_idle')} (RAM folder then {r.get('ram_folder_idle_mb', 0):.0f} MB, "
                              f"RSS {r['rss_idle_mb']:.0f} MB: together {r['rss_idle_mb'] + r.get('ram_folder_idle_mb', 0):.0f} MB); "
                              f"the first hybrid search after that took {r['search_after_idle_ms']:,.0f} ms (of it "
                              f"opening the graph again {r.get('index_reload_s', 0):.2f} s); one typed 1 s after "
                              f"the overlay opened (prepare_search) {r.get('search_1s_after_prepare_ms', 0):,.0f} ms "
                              f"(graph let go again before it: {r.get('index_released_again')}); RSS before the "
                              f"index was opened (embedder loaded): {r['rss_before_mb']:.0f} MB")
            phase_notes.append(f"{name}: the snapshot decrypted into the RAM folder in {r.get('read_s', 0):.1f} s, "
                               f"opened with it (`Index.load`) in {r.get('load_s', 0):.1f} s; the first hybrid "
                               f"search once ready (Chroma reads its HNSW files then, if not before) "
                               f"{r.get('first_search_s', 0):.2f} s")
            if "forget_s" in r:
                forgets.append(f"| {n:,} | {r['forget_chunks']:,} | {r['forget_s']:.1f} s | {r['store_forget_s']:.1f} s | "
                               f"{r['index_save_s']:.1f} s | {r['scrub_s']:.1f} s ({r['dead']:,} dead) | "
                               f"{r['compact_s']:.1f} s ({r['compactions']}) | "
                               f"{r['forget_searches']} ({r['forget_search_max_ms']:,.0f} ms) | "
                               f"{r['vector_queries']} ({r['vector_query_p50_ms']:,.0f} / {r['vector_query_max_ms']:,.0f} ms) | "
                               f"{r['forgotten_returned']} of {r['forgotten_probed']} | "
                               f"{r['forget_snapshot_mb']:.0f} MB | {r['forget_rss_peak_mb']:.0f} MB |")
        if not args.home:
            subprocess.run(["rm", "-rf", home], check=True)
    report += ["", *[f"- {n}" for n in phase_notes + idle_notes]]
    if forgets:
        report += ["", "A forget (one conversation): its store deletion, the new snapshot (with the scrub of its "
                   "copy, `chroma_scrub.scrub`) and any fresh graph (`Index._compact`), while one thread runs hybrid "
                   "searches and another vector-only queries (by forgotten chunks' vectors) without pause:", "",
                   "| chunks | forgotten | forget → new snapshot | of it: store | index save | of it: scrub | "
                   "fresh graph (times) | hybrid searches meanwhile (slowest) | vector queries meanwhile (p50 / slowest) | "
                   "forgotten chunks returned after | snapshot size | RSS peak |",
                   "|---|---|---|---|---|---|---|---|---|---|---|---|", *forgets]
    if args.params:
        report += ["", f"HNSW settings ({args.params:,} random 384-d vectors, Chroma PersistentClient in /dev/shm):",
                   "", *params(args.params)]
    print("\n".join(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
