"""Hybrid retrieval: FTS5 BM25 and vector similarity, fused by reciprocal rank.

Filters said in the query ("yesterday", "in Slack") are parsed out; explicit options win.
Every hit carries the ids of the sources it came from.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
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
# Below this cosine similarity a vector neighbour that no keyword matched is not shown: it is only
# the nearest of unrelated things. Chosen on the LoCoMo dev split (BENCHMARKS.md).
VECTOR_FLOOR = 0.25
# The neighbour stage: the messages just before and after each of the top matches get this share
# of its fused score. Chosen on the LoCoMo dev split over depth 10 / 15 / 20 / 30 x share 0.2 / 0.3,
# leave one conversation out (fit on two, scored on the third): 15 and 0.2 won twice of three,
# recall@5 / @10 0.696 / 0.794 -> 0.721 / 0.799 (was 10 and 0.3, chosen before the speaker list).
NEIGHBOUR_SHARE = 0.2
NEIGHBOUR_DEPTH = 15
# A person named in the question is a soft preference too: a fourth RRF list of the candidates
# they said, the neighbours included (see _prefer_speakers). The name is then left out of what is
# embedded, since every message of theirs carries it ("Caroline: …"), so it pulls all of them near
# the question. LoCoMo dev: recall@5 / @10 0.666 / 0.773 -> 0.688 / 0.790 (BENCHMARKS.md).
SPEAKER_PREFERENCE = True
# How much each RRF list counts (1 unless named here). Nearly all the evidence for a question that
# names one person is what that person said (97 % on LoCoMo dev), so their list counts twice:
# recall@5 0.691 -> 0.695 with the stop words and the name out of the keyword query too; weights
# 1.5 / 2.5 / 3 and keyword or vector lists at 1.4 did no better (BENCHMARKS.md). With the list
# applied after the neighbour stage, 1 / 2 / 3 left one conversation out chose 2 three times of three.
LIST_WEIGHTS: dict[str, float] = {"speaker": 2.0}


def without_names(query: str, names: Sequence[str]) -> str:
    for who in names:
        for n in {who, who.split()[0]}:
            query = re.sub(rf"\b{re.escape(n)}(?:'s)?\b", " ", query)
    return re.sub(r"\s+", " ", query).strip()


NOT_NAMES = frozenset("me you i we us user assistant system unknown".split())


def named_speakers(query: str, speakers: Sequence[str]) -> list[str]:
    """The people a question names, by full name or first name, as written ("What did Caroline
    say…"): case counts, so a speaker called "Will" is not named by "will", nor "Me" by "me"."""
    named = []
    for who in speakers:
        first = who.split()[0] if who.split() else who
        if who.lower() in NOT_NAMES or first.lower() in NOT_NAMES:
            continue
        if any(len(n) > 1 and re.search(rf"\b{re.escape(n)}\b", query) for n in {who, first}):
            named.append(who)
    return named


@dataclass
class SearchResult:
    hits: list[Hit]
    parsed: ParsedQuery
    modes: list[str] = field(default_factory=list)  # which retrievers answered: keyword, vector


def rrf(rankings: dict[str, Sequence[int]], k: int = RRF_K,
        weights: dict[str, float] | None = None) -> list[tuple[int, float, dict[str, int]]]:
    """Reciprocal-rank fusion: sum of weight/(k + rank) over the rankings each id appears in (a
    ranking's weight is 1 unless *weights* names it)."""
    scores: dict[int, float] = {}
    ranks: dict[int, dict[str, int]] = {}
    for name, ids in rankings.items():
        weight = (weights or {}).get(name, 1.0)
        for rank, cid in enumerate(ids, 1):
            scores[cid] = scores.get(cid, 0.0) + weight / (k + rank)
            ranks.setdefault(cid, {})[name] = rank
    return _best_first(scores, ranks)


def _best_first(scores: dict[int, float],
                ranks: dict[int, dict[str, int]]) -> list[tuple[int, float, dict[str, int]]]:
    """(id, score, ranks) by score, best first; ties by id, so the order never depends on chance."""
    ordered = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))
    return [(cid, score, ranks[cid]) for cid, score in ordered]


class Retriever:
    def __init__(self, store: Store, index: Index | None, embedder: Embedder | None):
        self.store = store
        self.index = index
        self.embedder = embedder
        self.rrf_k = RRF_K
        self.vector_floor = VECTOR_FLOOR
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="mneme-vector")

    def close(self) -> None:
        """After the last search (a search running now finishes first)."""
        self._pool.shutdown(wait=True)

    def vector_ready(self) -> bool:
        return self.index is not None and self.embedder is not None and self.index.ready.is_set()

    def search(self, query: str, limit: int = 10, *, since: float | None = None,
               until: float | None = None, app: str | None = None,
               kinds: Sequence[str] | None = None, mode: str = "hybrid",
               parse: bool = True) -> SearchResult:
        """*since*/*until*/*app* given here are hard filters; a time said in the query ("in June")
        only prefers what falls in it, so evidence from another time stays reachable."""
        parsed = parse_query(query, self.store.apps()) if parse else ParsedQuery(text=query)
        app = app or parsed.app
        prefer = None
        if since is None and until is None and (parsed.since is not None or parsed.until is not None):
            prefer = (parsed.since, parsed.until)
        filters = dict(since=since, until=until, app=app, kinds=kinds)
        depth = max(50, limit * 5)
        rankings: dict[str, list[int]] = {}
        text = parsed.text.strip()
        shown = ParsedQuery(text, since, until, app, prefer_since=prefer[0] if prefer else None,
                            prefer_until=prefer[1] if prefer else None)
        if not text:
            if prefer and since is None and until is None:
                filters.update(since=prefer[0], until=prefer[1])
            return SearchResult(self.store.hits(self.store.recent(limit, **filters)), shown, ["recent"])
        sims: dict[int, float] = {}
        named = named_speakers(text, self.store.speakers()) if SPEAKER_PREFERENCE else []
        words = without_names(text, named)
        # The vector side (embedding the query, the graph) runs beside the keyword side: both
        # spend their time in native code that lets go of the GIL (100k chunks, 2 cores: BENCHMARKS.md).
        vector = self._pool.submit(self._vector, words or text, depth, filters) \
            if mode in ("hybrid", "vector") and self.vector_ready() else None
        if mode in ("hybrid", "keyword"):
            # The name is left out of the keyword query as well: the speaker list below prefers what
            # they said, and "Caroline" in the text mostly marks messages said *to* Caroline. When
            # nothing but the name matches, the name is searched after all.
            found = self.store.keyword_search(words, depth, **filters) if words else []
            if not found and words != text:
                found = self.store.keyword_search(text, depth, **filters)
            rankings["keyword"] = [cid for cid, _ in found]
        if vector is not None:
            scored = vector.result()
            sims = dict(scored)
            keyword = set(rankings.get("keyword", ()))
            # The relevance floor: a vector neighbour no keyword matched must be close in meaning.
            rankings["vector"] = [cid for cid, sim in scored if sim >= self.vector_floor or cid in keyword]
        if prefer:
            pool = [cid for cid, _, _ in rrf(rankings, self.rrf_k)]
            inside = self.store.filter_chunks(pool, since=prefer[0], until=prefer[1])
            rankings["time"] = [cid for cid in pool if cid in inside]
        fused = self._with_neighbours(rrf(rankings, self.rrf_k, LIST_WEIGHTS), filters)
        if named:
            fused = self._prefer_speakers(fused, named)
        fused = fused[:limit]
        hits = self.store.hits([(cid, score) for cid, score, _ in fused])
        for hit, (cid, _, ranks) in zip(hits, fused):
            hit.ranks = ranks
            hit.similarity = sims.get(cid)
        return SearchResult(hits, shown, [m for m in rankings if m not in ("time", "speaker")])

    def _with_neighbours(self, fused: list[tuple[int, float, dict[str, int]]],
                         filters: dict) -> list[tuple[int, float, dict[str, int]]]:
        """The second stage: a message next to a strong match shares some of its score (an answer
        follows its question; a question is asked just before its answer). LoCoMo dev: recall@10
        0.747 -> 0.76 (BENCHMARKS.md)."""
        if not fused or not NEIGHBOUR_SHARE:
            return fused
        top = fused[:NEIGHBOUR_DEPTH]
        near = self.store.neighbour_chunks([cid for cid, _, _ in top], **filters)
        scores = {cid: score for cid, score, _ in fused}
        ranks = {cid: r for cid, _, r in fused}
        for cid, score, _ in top:
            for other in near.get(cid, ()):
                scores[other] = scores.get(other, 0.0) + NEIGHBOUR_SHARE * score
                ranks.setdefault(other, {}).setdefault("neighbour", 1)
        return _best_first(scores, ranks)

    def _prefer_speakers(self, fused: list[tuple[int, float, dict[str, int]]],
                         named: Sequence[str]) -> list[tuple[int, float, dict[str, int]]]:
        """The named person's list: what they said among the final candidates, in fused order, as
        one more RRF list (LIST_WEIGHTS). It comes after the neighbour stage, so their message just
        before or after a match is preferred too; before it, the neighbours of their best messages
        (mostly the other person's turns) came along unchecked, and theirs next to others' matches
        got no preference. LoCoMo dev recall@5 / @10 0.721 / 0.800 -> 0.748 / 0.812, every
        conversation better or level, no constant added (BENCHMARKS.md)."""
        pool = [cid for cid, _, _ in fused]
        said = self.store.filter_chunks(pool, speakers=named)
        if not 0 < len(said) < len(pool):
            return fused
        scores = {cid: score for cid, score, _ in fused}
        ranks = {cid: r for cid, _, r in fused}
        for cid, share, rank in rrf({"speaker": [c for c in pool if c in said]}, self.rrf_k, LIST_WEIGHTS):
            scores[cid] += share
            ranks[cid].update(rank)
        return _best_first(scores, ranks)

    def _vector(self, text: str, depth: int, filters: dict) -> list[tuple[int, float]]:
        """(chunk id, cosine similarity) best first."""
        qv = self.embedder.embed([text])[0]
        if not any(v for v in filters.values()):
            return self.index.query(qv, depth)
        got = self.index.query(qv, depth * 10)
        keep = self.store.filter_chunks([cid for cid, _ in got], **filters)
        ranked = [(cid, sim) for cid, sim in got if cid in keep]
        if len(ranked) >= depth:
            return ranked[:depth]
        # Too few survived the filter: score the filtered set exactly from the stored vectors.
        ids, matrix = self.store.embeddings_where(self.embedder.id, EXACT_VECTOR_LIMIT, **filters)
        if not ids:
            return ranked
        sims = matrix @ np.asarray(qv, dtype=np.float32)
        order = np.argsort(-sims)[:depth]
        return [(ids[i], float(sims[i])) for i in order]
