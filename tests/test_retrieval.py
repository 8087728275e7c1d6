"""Hybrid retrieval over a real store and a real in-memory Chroma index."""

import pytest

from mneme.core.retrieval import rrf
from tests.conftest import msg

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
