"""Hybrid retrieval: FTS5 BM25 and vector similarity, fused by reciprocal rank.

Filters said in the query ("yesterday", "in Slack") are parsed out; explicit options win.
Every hit carries the ids of the sources it came from.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from mneme.core.embedding import Embedder
from mneme.core.index import Index
from mneme.core.records import Hit
from mneme.core.store import Store
from mneme.core.timefilter import ParsedQuery, parse_query

# Reciprocal-rank constant. 60 is the paper's; a smaller k trusts each retriever's top ranks more,
# which suits short personal messages (see BENCHMARKS.md for the side-by-side figures).
RRF_K = 10
EXACT_VECTOR_LIMIT = 50_000  # filtered sets up to this size are scored exactly, not by ANN


@dataclass
class SearchResult:
    hits: list[Hit]
    parsed: ParsedQuery
    modes: list[str] = field(default_factory=list)  # which retrievers answered: keyword, vector


def rrf(rankings: dict[str, Sequence[int]], k: int = RRF_K) -> list[tuple[int, float, dict[str, int]]]:
    """Reciprocal-rank fusion: sum of 1/(k + rank) over the rankings each id appears in."""
    scores: dict[int, float] = {}
    ranks: dict[int, dict[str, int]] = {}
    for name, ids in rankings.items():
        for rank, cid in enumerate(ids, 1):
            scores[cid] = scores.get(cid, 0.0) + 1.0 / (k + rank)
            ranks.setdefault(cid, {})[name] = rank
    ordered = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))
    return [(cid, score, ranks[cid]) for cid, score in ordered]


class Retriever:
    def __init__(self, store: Store, index: Index | None, embedder: Embedder | None):
        self.store = store
        self.index = index
        self.embedder = embedder
        self.rrf_k = RRF_K

    def vector_ready(self) -> bool:
        return self.index is not None and self.embedder is not None and self.index.ready.is_set()

    def search(self, query: str, limit: int = 10, *, since: float | None = None,
               until: float | None = None, app: str | None = None,
               kinds: Sequence[str] | None = None, mode: str = "hybrid",
               parse: bool = True) -> SearchResult:
        parsed = parse_query(query, self.store.apps()) if parse else ParsedQuery(text=query)
        since = since if since is not None else parsed.since
        until = until if until is not None else parsed.until
        app = app or parsed.app
        filters = dict(since=since, until=until, app=app, kinds=kinds)
        depth = max(50, limit * 5)
        rankings: dict[str, list[int]] = {}
        text = parsed.text.strip()
        if not text:
            return SearchResult(self.store.hits(self.store.recent(limit, **filters)), parsed, ["recent"])
        if mode in ("hybrid", "keyword"):
            rankings["keyword"] = [cid for cid, _ in self.store.keyword_search(text, depth, **filters)]
        if mode in ("hybrid", "vector") and self.vector_ready():
            rankings["vector"] = self._vector(text, depth, filters)
        fused = rrf(rankings, self.rrf_k)[:limit]
        hits = self.store.hits([(cid, score) for cid, score, _ in fused])
        for hit, (_, _, ranks) in zip(hits, fused):
            hit.ranks = ranks
        return SearchResult(hits, ParsedQuery(text, since, until, app), list(rankings))

    def _vector(self, text: str, depth: int, filters: dict) -> list[int]:
        qv = self.embedder.embed([text])[0]
        if not any(v for v in filters.values()):
            return [cid for cid, _ in self.index.query(qv, depth)]
        got = [cid for cid, _ in self.index.query(qv, depth * 10)]
        keep = self.store.filter_chunks(got, **filters)
        ranked = [cid for cid in got if cid in keep]
        if len(ranked) >= depth:
            return ranked[:depth]
        # Too few survived the filter: score the filtered set exactly from the stored vectors.
        ids, matrix = self.store.embeddings_where(self.embedder.id, EXACT_VECTOR_LIMIT, **filters)
        if not ids:
            return ranked
        sims = matrix @ np.asarray(qv, dtype=np.float32)
        order = np.argsort(-sims)[:depth]
        return [ids[i] for i in order]
