"""Keyword search of this tree against another commit's, side by side in one process.

``python tests/bench/keyword_bench.py --home H --against main --queries 60``: H is a memory built
by ``index_bench.py --phase build``; the other commit's ``core/store.py`` (``git show``) opens a
second connection to the same store, and each query runs on both, taking turns which goes first.
Prints p50/p95 of ``Store.keyword_search`` (50 results) for each and how many rankings agree.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("MNEME_PASSPHRASE", "bench passphrase")
os.environ.setdefault("PYTHON_KEYRING_BACKEND", "keyring.backends.fail.Keyring")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--home", required=True)
    parser.add_argument("--against", default="main")
    parser.add_argument("--queries", type=int, default=60)
    args = parser.parse_args()
    from mneme.core.memory import open_memory
    from tests.bench.synthetic import WORDS, ZIPF

    source = subprocess.run(["git", "show", f"{args.against}:core/store.py"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(source)
    spec = importlib.util.spec_from_file_location("store_against", f.name)
    other = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(other)
    os.unlink(f.name)
    mem = open_memory(args.home, embedder=None, warm=False)
    stores = {"this tree": mem.store, args.against: other.Store(mem.store.path, mem.store._key)}
    rng = np.random.default_rng(3)
    qs = [" ".join(rng.choice(WORDS, 3, p=ZIPF)) for _ in range(args.queries)]
    for q in qs[:3]:  # (each connection's first queries read the schema and warm its cache)
        for s in stores.values():
            s.keyword_search(q, 50)
    lat: dict[str, list[float]] = {name: [] for name in stores}
    same = 0
    for i, q in enumerate(qs):
        got = {}
        for name in (list(stores) if i % 2 else list(stores)[::-1]):
            t = time.perf_counter()
            got[name] = [cid for cid, _ in stores[name].keyword_search(q, 50)]
            lat[name].append((time.perf_counter() - t) * 1000)
        same += len({tuple(v) for v in got.values()}) == 1
    for name, values in lat.items():
        print(f"{name}: keyword_search p50 {np.percentile(values, 50):.1f} ms, p95 "
              f"{np.percentile(values, 95):.1f} ms, slowest {max(values):.0f} ms")
    print(f"the same 50 results in the same order for {same} of {len(qs)} queries; load average "
          f"{os.getloadavg()[0]:.1f}")
    stores[args.against]._db.close()
    mem.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
