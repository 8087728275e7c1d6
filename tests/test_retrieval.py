"""Hybrid retrieval over a real store and a real in-memory Chroma index."""

import contextlib
import threading

import pytest

from mneme.core.retrieval import rrf
from tests.conftest import msg

@contextlib.contextmanager
def queries_of(store, monkeypatch):
    """The (sql, args) of the store's queries made on this thread inside the block (the index
    warm-up runs its own on another thread)."""
    statements: list[tuple] = []
    query, caller = store._q, threading.get_ident()

    def recorded(sql, args=()):
        if threading.get_ident() == caller:
            statements.append((sql, list(args)))
        return query(sql, args)

    monkeypatch.setattr(store, "_q", recorded)
    try:
        yield statements
    finally:
        monkeypatch.undo()


DAY = 86400
T0 = 1_700_000_000


def test_rrf_rewards_agreement():
    fused = rrf({"keyword": [1, 2, 3], "vector": [3, 4, 1]})
    order = [cid for cid, _, _ in fused]
    assert order[:2] == [1, 3] and set(order) == {1, 2, 3, 4}
    assert fused[0][2] == {"keyword": 1, "vector": 3}


def fill(mem):
    mem.import_messages([
        msg(1, "the quarterly report is due on the 14th", conv="Slack #finance", t=T0, app="Slack"),
        msg(2, "grandma's birthday dinner at the Italian place", conv="Family", t=T0 + DAY, app="WhatsApp"),
        msg(3, "the quarterly planning offsite is in Lisbon", conv="Slack #team", t=T0 + 2 * DAY, app="Slack"),
        msg(4, "serial number XK-4471-QZ for the router", conv="Notes", t=T0 + 3 * DAY, app="Notes"),
    ])
    mem.embed_pending()
    assert mem.wait_ready(30) and mem.wait_caught_up(30)


def test_hybrid_uses_both_and_hits_carry_sources(open_mem):
    mem = open_mem()
    fill(mem)
    result = mem.search("quarterly report", limit=3)
    assert result.modes == ["keyword", "vector"]
    top = result.hits[0]
    assert top.text.startswith("the quarterly report") and top.source_ids and top.app == "Slack"
    assert set(top.ranks) == {"keyword", "vector"}
    assert mem.store.source(top.source_ids[0]).external_id == "m1"


def test_filters_from_options_and_from_the_query(open_mem):
    mem = open_mem()
    fill(mem)
    only_team = mem.search("quarterly", app="Slack", since=T0 + DAY)
    assert [h.source_ids for h in only_team.hits] == [[3]]
    said = mem.search("quarterly in WhatsApp")
    assert said.parsed.app == "WhatsApp" and all(h.app == "WhatsApp" for h in said.hits)
    vector_only = mem.search("birthday", mode="vector", app="Family")
    assert [h.source_ids for h in vector_only.hits] == [[2]]
    assert mem.search("report", kinds=["frame"]).hits == []


def test_an_app_filter_is_a_name_not_a_pattern(open_mem):
    mem = open_mem()
    fill(mem)
    assert [h.source_ids for h in mem.search("quarterly", app="Slack #t").hits] == [[3]]  # a prefix
    for pattern in ("%", "_", "Sl%", "S_ack"):
        assert mem.search("quarterly", app=pattern).hits == [], pattern


def test_keyword_search_works_before_the_index_is_warm(open_mem):
    mem = open_mem()
    fill(mem)
    mem.close()
    mem = open_mem(warm=False)
    assert not mem.wait_ready(0)
    result = mem.search("XK-4471-QZ")
    assert result.modes == ["keyword"] and result.hits[0].source_ids == [4]


def test_forget_removes_from_store_and_index(open_mem):
    mem = open_mem()
    fill(mem)
    before = mem.index.count()
    assert mem.forget(app="Slack") == 2
    assert mem.index.count() == before - 2
    assert all(h.app != "Slack" for h in mem.search("quarterly", mode="vector").hits)
    assert mem.doctor() == []


def test_doctor_finds_and_repairs_disagreement(open_mem):
    mem = open_mem()
    fill(mem)
    mem.index.delete([1, 2])                   # vectors lost from the index
    mem.index.add([999], mem.embedder.embed(["ghost"]))  # an entry with no stored vector
    mem.store.add_messages([msg(9, "added behind the index's back")])
    problems = mem.doctor(repair=True)
    assert any("missing from the index" in p for p in problems)
    assert any("no stored vector" in p for p in problems)
    assert any("no vector from" in p for p in problems)
    assert mem.doctor() == []


def test_new_embedder_means_reembedding_not_mixing(open_mem, real_embedder):
    mem = open_mem()
    fill(mem)
    mem.close()
    mem = open_mem(embedder=real_embedder, warm=False)
    assert mem.store.counts(real_embedder.id)["embedded"] == 0
    mem.warm(background=False)
    counts = mem.store.counts(real_embedder.id)
    assert counts["embedded"] == counts["chunks"] == 4
    assert mem.index.count() == 4


@pytest.mark.slow
def test_real_embedder_finds_paraphrases_keywords_miss(open_mem, real_embedder):
    mem = open_mem(embedder=real_embedder)
    fill(mem)
    result = mem.search("grandmother party restaurant", limit=2)
    assert result.hits[0].source_ids == [2]
    assert mem.search("grandmother party restaurant", mode="keyword").hits == []
    # The registered Chroma embedding function gives the same neighbours as our own query path.
    assert mem.index.query_text("grandmother party restaurant", 1)[0][0] == result.hits[0].chunk_id


def test_index_warms_from_stored_vectors(open_mem):
    mem = open_mem()
    mem.import_messages([msg(i, f"note number {i} about topic {i % 17}") for i in range(3000)])
    mem.embed_pending()
    mem.close()
    mem = open_mem()
    assert mem.search("topic").hits  # keyword answers at once
    assert mem.wait_ready(60) and mem.index.count() == 3000


def test_a_time_said_in_the_query_is_preferred_not_required(open_mem):
    from datetime import datetime, timezone

    mem = open_mem()
    june = datetime(2023, 6, 10, tzinfo=timezone.utc).timestamp()
    mem.import_messages([msg(1, "we went camping by the lake", t=june, conv="Trips"),
                         msg(2, "camping gear is in the garage", t=june + 40 * DAY, conv="Home")])
    mem.embed_pending()
    # "in June" means June of this year: nothing falls there, yet both stay reachable…
    result = mem.search("camping in June", limit=5)
    assert {h.source_ids[0] for h in result.hits} == {1, 2} and result.parsed.since is None
    # …and a year that holds one of them puts it first without hiding the other.
    result = mem.search("camping in June 2023", limit=5)
    assert [h.source_ids[0] for h in result.hits] == [1, 2]
    # An explicit filter is still a filter.
    assert [h.source_ids[0] for h in mem.search("camping", since=june + DAY).hits] == [2]


def test_unrelated_nearest_neighbours_are_not_shown(open_mem, real_embedder):
    mem = open_mem(embedder=real_embedder)
    mem.import_messages([msg(1, "The launch review moved to Thursday 11am", conv="Work"),
                         msg(2, "Tomato seedlings go out after the last frost", conv="Garden")])
    mem.embed_pending()
    assert mem.wait_ready(30)
    hits = mem.search("launch", limit=10).hits
    assert [h.source_ids[0] for h in hits] == [1]
    assert mem.search("quantum chromodynamics lecture", limit=10).hits == []


def test_a_reply_is_found_by_the_question_it_answers_and_forgetting_it_leaves_nothing(open_mem):
    mem = open_mem()
    mem.import_messages([msg(1, "How long have you two been married?", speaker="Caroline", conv="C"),
                         msg(2, "Five years already, time flies!", speaker="Melanie", conv="C"),
                         msg(3, "Did you see the game?", speaker="Caroline", conv="C")])
    mem.embed_pending()
    found = mem.search("how long married", limit=3, mode="keyword").hits
    assert 2 in [h.source_ids[0] for h in found]
    mem.forget(source_ids=[1])
    assert mem.search("married", mode="keyword").hits == []
    ctx = mem.store._q("SELECT context FROM chunks WHERE source_id = 2")[0][0]
    assert "married" not in ctx
    assert mem.doctor() == [] or all("no vector" in p for p in mem.doctor())


def test_a_person_named_in_the_question_is_preferred_not_required(open_mem, real_embedder, monkeypatch):
    from mneme.core import retrieval

    mem = open_mem(embedder=real_embedder)
    mem.import_messages([
        msg(1, "what to say about the cake: lemon cake, lemon glaze, the best cake", speaker="Priya"),
        msg(2, "I will bring dessert on Friday, and some drinks for everyone at the party",
            speaker="Raj", t=1_700_100_000),
        msg(3, "Raj always forgets the cake candles, say it again Raj", speaker="Priya", t=1_700_200_000),
        msg(4, "Raj said the cake was too sweet", speaker="Priya", t=1_700_300_000),
    ])
    mem.embed_pending()
    assert mem.wait_ready(30) and mem.wait_caught_up(30)
    question = "What did Raj say about the cake?"
    monkeypatch.setattr(retrieval, "SPEAKER_PREFERENCE", False)
    before = [h.speaker for h in mem.search(question, limit=4).hits]
    monkeypatch.setattr(retrieval, "SPEAKER_PREFERENCE", True)
    hits = mem.search(question, limit=4).hits
    after = [h.speaker for h in hits]
    assert "Raj" in before and after.index("Raj") < before.index("Raj")  # Raj's own message moves up
    assert hits[after.index("Raj")].ranks.get("speaker") == 1
    assert after.count("Priya") == 3  # the others stay reachable
    # a lower-case word is not a name
    assert all("speaker" not in h.ranks for h in mem.search("what did raj say about the cake", limit=3).hits)


def test_pronouns_and_glue_are_not_keywords(open_mem):
    from mneme.core.store import fts_query

    assert fts_query("What has she done with her family during the trip?") == '"done" OR "family" OR "trip"'
    mem = open_mem()
    mem.import_messages([msg(1, "her turn, she said, her call, her choice", conv="A"),
                         msg(2, "the kids drew dinosaurs all afternoon", conv="B"),
                         *[msg(10 + i, f"unrelated note number {i}", conv=f"N{i}") for i in range(4)]])
    hits = mem.search("what did she say about her kids", mode="keyword").hits
    assert [h.source_ids[0] for h in hits] == [2]


def test_a_named_person_is_left_out_of_the_keyword_query(open_mem):
    """A name in the text mostly marks a message said *to* that person; what they said themselves is
    found by the speaker list, so the name does not count as a keyword."""
    mem = open_mem()
    mem.import_messages([msg(1, "Raj! Raj, Raj, Raj: you forget the cake again", speaker="Priya", conv="A"),
                         msg(2, "I will bring the cake", speaker="Raj", conv="B"),
                         *[msg(10 + i, f"unrelated note number {i}", speaker="Priya", conv=f"N{i}")
                           for i in range(6)]])
    hits = {h.source_ids[0]: h for h in mem.search("What did Raj say about the cake?", mode="keyword").hits}
    assert hits[2].ranks["keyword"] == 1 and hits[1].ranks["keyword"] == 2
    assert hits[2].ranks["speaker"] == 1
    # when nothing but the name matches, the name is searched after all
    found = mem.search("What was grandpa's gift to Raj?", mode="keyword").hits
    assert [h.source_ids[0] for h in found][:2] == [2, 1]


def test_what_the_named_person_said_outweighs_a_single_list(open_mem, monkeypatch):
    """Their message, found low by both retrievers, still comes before others' messages that both
    rank first: the speaker list counts twice (LIST_WEIGHTS)."""
    from mneme.core import retrieval

    mem = open_mem()
    mem.import_messages([
        *[msg(i, f"cake cake {i}", speaker="Priya", conv=f"C{i}", t=T0 + i) for i in range(15)],
        msg(99, "I will bring dessert, a cake maybe, and drinks and snacks and chairs and music for the "
                "whole party on Friday evening", speaker="Raj", conv="R", t=T0 + 99)])
    mem.embed_pending()
    assert mem.wait_ready(30) and mem.wait_caught_up(30)
    question = "What did Raj say about the cake?"
    first = mem.search(question, limit=5).hits[0]
    assert first.speaker == "Raj" and first.ranks["keyword"] > 12 and first.ranks["vector"] > 12
    monkeypatch.setattr(retrieval, "LIST_WEIGHTS", {})
    assert mem.search(question, limit=5).hits[0].speaker == "Priya"


def test_the_named_person_s_message_next_to_a_match_is_preferred_too(open_mem):
    """Raj's message holds no word of the question; Priya's reply after it matches. The speaker list
    is made after the neighbour stage, so Raj's message, brought in as a neighbour, is preferred
    over Priya's own matches (before, the list was made without it and it came last)."""
    mem = open_mem()
    mem.import_messages([
        msg(1, "We spent three nights at the beach with the kids", speaker="Raj", conv="C", t=T0),
        msg(2, "Sounds like you camped at the best spot!", speaker="Priya", conv="C", t=T0 + 30),
        *[msg(10 + i, f"we camped by the lake, day {i}", speaker="Priya", conv=f"D{i}",
              t=T0 + DAY * (i + 1)) for i in range(3)]])
    hits = mem.search("Where has Raj camped?", limit=5, mode="keyword").hits
    assert hits[0].text.startswith("We spent three nights") and hits[0].speaker == "Raj"
    assert hits[0].ranks == {"neighbour": 1, "speaker": 1}
    assert len(hits) == 5 and {h.speaker for h in hits[1:]} == {"Priya"}  # the others stay


def test_the_messages_next_to_the_fifteen_best_matches_come_along(open_mem):
    """"Where were you last weekend?" holds no word of the question; it is shown because the answer
    after it matches. The 15 best matches bring theirs (NEIGHBOUR_DEPTH), the rest do not."""
    mem = open_mem()
    for i in range(20):
        mem.import_messages([msg(2 * i, "Where were you last weekend?", conv=f"C{i}", t=T0 + i * DAY),
                             msg(2 * i + 1, f"we went on a camping trip {'and more ' * i}", conv=f"C{i}",
                                 t=T0 + i * DAY + 30)])
    hits = mem.search("camping trip", limit=60, mode="keyword").hits
    asked = [h for h in hits if h.text == "Where were you last weekend?"]
    assert len(asked) == 15
    assert all(set(h.ranks) == {"neighbour"} for h in asked)
    matched = {h.source_ids[0]: n for n, h in enumerate(hits) if "keyword" in h.ranks}
    assert len(matched) == 20
    # the 15 shortest (so best) answers bring their questions, each shown after its answer
    assert {h.source_ids[0] + 1 for h in asked} == {2 * i + 2 for i in range(15)}
    assert all(matched[h.source_ids[0] + 1] < hits.index(h) for h in asked)


def test_a_message_s_neighbours_are_looked_up_from_its_own_time(open_mem, monkeypatch):
    """The messages before and after a match in its conversation, ties in time taken by id. The
    lookup starts at the message's time in the index (conversation, kind, time): said as
    ``time < t OR (time = t AND id < s)`` alone, SQLite walked the conversation's index from its
    newest (or oldest) message down to it, ~20,000 rows a lookup at 1M chunks (BENCHMARKS.md,
    fourth round)."""
    mem = open_mem()
    # pairs of messages share a time; another conversation is interleaved with them
    mem.import_messages([msg(i, f"line {i}", conv="C" if i % 3 else "D", t=T0 + (i // 2) * 60)
                         for i in range(60)])
    store = mem.store
    chunk = {store.source(sid).external_id: cid for cid, sid in store._q(
        "SELECT c.id, c.source_id FROM chunks c")}
    in_c = sorted((i for i in range(60) if i % 3), key=lambda i: (T0 + (i // 2) * 60, chunk[f"m{i}"]))
    with queries_of(store, monkeypatch) as statements:
        near = store.neighbour_chunks([chunk[f"m{i}"] for i in in_c])
    for n, i in enumerate(in_c):
        want = ([chunk[f"m{in_c[n - 1]}"]] if n else []) + ([chunk[f"m{in_c[n + 1]}"]] if n + 1 < len(in_c) else [])
        assert near[chunk[f"m{i}"]] == want, i
    lookups = [(sql, args) for sql, args in statements if "s.conversation = " in sql]
    assert lookups and len(lookups) == 2 * len(in_c)
    for sql, args in lookups:  # (the plan of the statement with its parameters bound, as it ran)
        plan = " ".join(str(r[3]) for r in store._q("EXPLAIN QUERY PLAN " + sql, args))
        assert "sources_conversation" in plan and ("time<?" in plan or "time>?" in plan), plan


def test_the_names_a_query_may_filter_by_are_read_from_the_indexes(open_mem, monkeypatch):
    """Apps and conversations (and their first words) as SELECT DISTINCT gives them, read by
    stepping through each one's index, never by a scan of every source (2 s at 1M sources, and
    done again at the first search after each write)."""
    mem = open_mem()
    mem.import_messages([msg(i, f"note {i}", conv=["Slack #team", "Family", "", "Ärzte / Termine", "x"][i % 5],
                             app=["Slack", "WhatsApp", "chat", ""][i % 4]) for i in range(40)])
    store = mem.store
    distinct = {r[0] for r in store._q("SELECT DISTINCT app FROM sources WHERE app != '' UNION "
                                       "SELECT DISTINCT conversation FROM sources WHERE conversation != ''")}
    store._apps = None
    with queries_of(store, monkeypatch) as statements:
        names = store.apps()
    assert {n for n in distinct if len(n) > 1} <= set(names)
    assert set(names) - distinct == {"Ärzte"}  # the first word of "Ärzte / Termine" ("Slack" is an app)
    assert statements
    for sql, args in statements:
        plan = " ".join(str(r[3]) for r in store._q("EXPLAIN QUERY PLAN " + sql, args))
        assert plan.startswith("SEARCH sources USING COVERING INDEX") and "SCAN" not in plan, plan


def test_a_keyword_query_drops_common_words_counted_only_as_far_as_needed(open_mem, monkeypatch):
    """Words found in more than 5 % of the newest SHARE_WINDOW chunks are dropped while rarer ones
    remain, by their stems ("walks" finds "walking"); a word's matches are counted only as far as
    that choice needs (fts5vocab's count of a word in most of 1M chunks took 120-220 ms)."""
    from mneme.core import store as store_module

    monkeypatch.setattr(store_module, "BIG_MATCH", 20)
    mem = open_mem()
    mem.import_messages([msg(i, f"weather {'walking' if i % 50 == 0 else 'sitting'} "
                                f"{'storm' if i < 40 else 'calm'} {i}") for i in range(400)])
    store = mem.store
    # 16: each walking message, and the one after it (which holds it as its context)
    assert store._selective('"weather" OR "walks"') == ('"walks"', 16)
    assert store._selective('"walks" OR "number"') == ('"walks" OR "number"', 16)  # few matches: as it is
    # every word common: the rarest is kept, its count bounded at BIG_MATCH + 1
    assert store._selective('"weather" OR "calm"') == ('"calm"', 21)
    # "storm" is in the 40 oldest messages (10 %) and none of the 100 newest
    assert store._selective('"storm" OR "walks"') == ('"walks"', 16)
    monkeypatch.setattr(store_module, "SHARE_WINDOW", 100)
    assert store._selective('"storm" OR "walks"') == ('"storm" OR "walks"', 21 + 16)
    hits = mem.search("weather walks", limit=20, mode="keyword").hits
    assert {f"weather walking calm {i}" for i in range(50, 400, 50)} <= {h.text for h in hits}


def test_many_keyword_matches_are_scored_in_the_newest_window(open_mem, monkeypatch):
    """Past SCORE_WINDOW matches, BM25 ranks the newest SCORE_WINDOW of them (with the scores it
    gives them among all: IDF is the whole index's); a memory with fewer matches is ranked whole."""
    from mneme.core import store as store_module

    mem = open_mem()
    # "harbour" once in short texts (high BM25) early on, in long texts (low BM25) later
    mem.import_messages([msg(i, "harbour " + ("quiet " * (1 if i < 20 else 30)) + str(i), conv=f"C{i}")
                         for i in range(40)])
    store = mem.store
    whole = store.keyword_search("harbour", 10)
    assert {int(h.text.split()[-1]) for h in store.hits(whole)} <= set(range(20))  # the short, older ones
    monkeypatch.setattr(store_module, "SCORE_WINDOW", 8)
    windowed = store.keyword_search("harbour", 10)
    newest = [cid for (cid,) in store._q("SELECT rowid FROM chunks_fts WHERE chunks_fts MATCH 'harbour' "
                                         "ORDER BY rowid DESC LIMIT 8")]
    assert sorted(cid for cid, _ in windowed) == sorted(newest)
    assert [s for _, s in windowed] == sorted(s for _, s in windowed)  # best (lowest bm25) first
    scores = dict(store._q(f"SELECT rowid, {store_module.BM25} FROM chunks_fts WHERE chunks_fts MATCH 'harbour'"))
    assert all(abs(scores[cid] - s) < 1e-9 for cid, s in windowed)  # the scores it has among all


def _keyword_segments(store) -> int:
    """The keyword index's segment count, from FTS5's structure record (id 10 of its data table:
    a 4-byte cookie, then varints: levels, segments)."""
    (blob,), = store._q("SELECT block FROM chunks_fts_data WHERE id = 10")
    values, value, i = [], 0, 4
    while len(values) < 2:
        value = (value << 7) | (blob[i] & 0x7F)
        if not blob[i] & 0x80:
            values.append(value)
            value = 0
        i += 1
    return values[1]


def test_the_keyword_index_is_merged_into_one_segment_once_enough_is_new(open_mem, monkeypatch):
    """Each import adds a segment to the keyword index (FTS5's automerge folds them level by level
    only), and a search looks each word up in every one: 11 at 1M chunks. After the warm-up, once
    KEYWORD_MERGE_MIN chunks and KEYWORD_MERGE_SHARE of them are newer than the last merge, they are
    merged into one, in short steps; the same results and scores, and nothing to do again after."""
    from mneme.core import store as store_module

    monkeypatch.setattr(store_module, "KEYWORD_MERGE_MIN", 100)
    monkeypatch.setattr(store_module, "KEYWORD_MERGE_PAGES", 1)
    mem = open_mem(warm=False)
    for batch in range(30):
        mem.import_messages([msg(batch * 10 + i, f"harbour lights {'storm' if i % 3 else 'calm'} {batch} {i}")
                             for i in range(10)])
    store = mem.store
    assert _keyword_segments(store) > 3
    before = {q: store.keyword_search(q, 50) for q in ("harbour storm", "calm", "lights 7")}
    assert store.keyword_merge_due()
    stop = threading.Event()
    stop.set()
    assert store.merge_keywords(stop=stop) is None and store.keyword_merge_due()  # stopped (at lock)
    mem.close()

    mem = open_mem()  # the warm-up merges it, after the vector index and the catch-up
    mem._warm_thread.join(timeout=60)
    store = mem.store
    assert _keyword_segments(store) == 1
    assert not store.keyword_merge_due()
    assert store.merge_keywords() == 0  # one segment: nothing left to merge
    assert {q: store.keyword_search(q, 50) for q in before} == before
    mem.import_messages([msg(1000 + i, f"harbour {i}") for i in range(50)])
    assert not store.keyword_merge_due()  # 50 new of 350: under KEYWORD_MERGE_MIN


def test_a_forget_that_rebuilds_the_keyword_index_has_it_merged_again(open_mem, monkeypatch):
    """A forget of many chunks rebuilds the keyword index (leaving it in segments again): the next
    warm-up merges it, however few chunks are new."""
    from mneme.core import store as store_module

    monkeypatch.setattr(store_module, "KEYWORD_MERGE_MIN", 100)
    monkeypatch.setattr(store_module, "FTS_SECURE_MAX", 0)  # every forget rebuilds the keyword index
    mem = open_mem()
    mem._warm_thread.join(timeout=60)
    for batch in range(30):
        mem.import_messages([msg(batch * 10 + i, f"harbour lights {batch} {i}", conv=f"C{batch % 3}")
                             for i in range(10)])
    store = mem.store
    assert store.merge_keywords() > 0 and not store.keyword_merge_due()
    mem.forget(app="C1")
    assert store.keyword_merge_due()
    mem.close()

    mem = open_mem()
    mem._warm_thread.join(timeout=60)
    store = mem.store
    assert not store.keyword_merge_due() and store.merge_keywords() == 0
    assert {int(h.text.split()[-2]) % 3 for h in store.hits(store.keyword_search("harbour", 50))} == {0, 2}
