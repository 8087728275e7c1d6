"""Flash offload: the GGUF layout, the plan within a memory budget, the budget setting, and
greedy decoding that is token-for-token the same with and without the placement policy."""

from __future__ import annotations

import os

import numpy as np
import pytest

from mneme.core.config import Config, parse_memory_budget
from mneme.core.errors import BadInputError, UserError
from mneme.models import flash

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
N_LAYER, N_EMBD, N_FF, N_VOCAB, N_EXPERT = 4, 64, 1024, 512, 4


def _write_gguf(path, moe: bool):
    """A llama-shaped GGUF with random f32 weights; MoE-shaped: routed experts plus a router."""
    import gguf

    rng = np.random.default_rng(0)
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(N_LAYER)
    w.add_embedding_length(N_EMBD)
    w.add_feed_forward_length(N_FF)
    w.add_head_count(4)
    w.add_head_count_kv(2)
    w.add_context_length(256)
    if moe:
        w.add_expert_count(N_EXPERT)
        w.add_expert_used_count(2)

    def t(name, *shape):
        w.add_tensor(name, rng.standard_normal(shape).astype(np.float32))

    t("token_embd.weight", N_VOCAB, N_EMBD)
    for i in range(N_LAYER):
        t(f"blk.{i}.attn_norm.weight", N_EMBD)
        for part in ("q", "k", "v", "output"):
            t(f"blk.{i}.attn_{part}.weight", N_EMBD, N_EMBD)
        t(f"blk.{i}.ffn_norm.weight", N_EMBD)
        if moe:
            t(f"blk.{i}.ffn_gate_inp.weight", N_EXPERT, N_EMBD)
            for part in ("gate", "up"):
                t(f"blk.{i}.ffn_{part}_exps.weight", N_EXPERT, N_FF // 4, N_EMBD)
            t(f"blk.{i}.ffn_down_exps.weight", N_EXPERT, N_EMBD, N_FF // 4)
        else:
            for part in ("gate", "up"):
                t(f"blk.{i}.ffn_{part}.weight", N_FF, N_EMBD)
            t(f"blk.{i}.ffn_down.weight", N_EMBD, N_FF)
    t("output_norm.weight", N_EMBD)
    t("output.weight", N_VOCAB, N_EMBD)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.fixture(scope="module")
def dense(tmp_path_factory):
    return flash.read_layout(_write_gguf(tmp_path_factory.mktemp("g") / "dense.gguf", moe=False))


@pytest.fixture(scope="module")
def moe(tmp_path_factory):
    return flash.read_layout(_write_gguf(tmp_path_factory.mktemp("g") / "moe.gguf", moe=True))


def _kinds(layout):
    return {t.name: t.kind for t in layout.tensors}


def test_dense_gguf_is_classified_dense(dense):
    kinds = _kinds(dense)
    assert not dense.moe and dense.n_layer == N_LAYER and dense.n_embd == N_EMBD
    assert kinds["blk.2.ffn_up.weight"] == "ffn" and kinds["blk.2.ffn_norm.weight"] == "always"
    assert kinds["blk.0.attn_q.weight"] == "always" and kinds["output.weight"] == "always"
    assert kinds["token_embd.weight"] == "sparse"  # untied: one row per token
    # offsets and sizes are the file's: every tensor lies inside it, none overlap
    spans = sorted((t.offset, t.offset + t.size) for t in dense.tensors)
    assert spans[-1][1] <= dense.file_size
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))
    assert {t.size for t in dense.tensors if t.name.endswith("ffn_up.weight")} == {N_FF * N_EMBD * 4}


@pytest.mark.parametrize("layout_name", ["dense", "moe"])
def test_header_walk_agrees_with_gguf_reader(layout_name, request):
    import gguf

    layout = request.getfixturevalue(layout_name)
    reader = gguf.GGUFReader(layout.path)
    assert [(t.name, int(t.data_offset), int(t.n_bytes)) for t in reader.tensors] == \
        [(t.name, t.offset, t.size) for t in layout.tensors]
    assert layout.n_vocab == N_VOCAB and layout.n_head_kv == 2


def test_a_file_that_is_not_gguf_is_refused_clearly(tmp_path):
    bad = tmp_path / "notes.gguf"
    bad.write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + b"\xff" * 9)
    with pytest.raises(BadInputError, match="cannot be read as a GGUF model"):
        flash.read_layout(bad)


def test_moe_gguf_is_classified_moe(moe):
    kinds = _kinds(moe)
    assert moe.moe
    assert {kinds[f"blk.1.ffn_{p}_exps.weight"] for p in ("gate", "up", "down")} == {"expert"}
    assert kinds["blk.1.ffn_gate_inp.weight"] == "always"  # the router is used for every token
    assert not any(k == "ffn" for k in kinds.values())


def test_large_budget_is_all_resident(dense):
    plan = flash.make_plan(dense, 8 << 30, n_ctx=256)
    assert plan.mode == "resident" and not plan.streamed
    assert plan.summary()["mode"] == "resident"


@pytest.mark.parametrize("layout_name", ["dense", "moe"])
def test_pinned_set_stays_within_budget(layout_name, request):
    layout = request.getfixturevalue(layout_name)
    file_bytes = layout.file_size
    lo = flash.make_plan(layout, 8 << 30, 256, file_backed=True).minimum_budget
    seen_streamed = set()
    for budget in np.linspace(lo, lo + file_bytes, 9).astype(int):
        plan = flash.make_plan(layout, int(budget), 256, file_backed=True)
        assert plan.mode == "file-backed"
        assert plan.pinned_bytes + plan.window_bytes + plan.kv_bytes + plan.work_bytes <= budget
        always = {t.name for t in layout.tensors if t.kind == "always"}
        assert always <= {t.name for t in plan.pinned}
        names = [t.name for t in plan.pinned] + [t.name for ts in plan.streamed.values() for t in ts]
        assert len(names) == len(set(names))  # each tensor pinned or streamed, never both
        if layout.moe:
            assert all(t.kind == "expert" for ts in plan.streamed.values() for t in ts)
        seen_streamed.add(plan.streamed_bytes)
    assert max(seen_streamed) > 0 and min(seen_streamed) < max(seen_streamed)  # more budget, less streamed


def test_too_small_budget_is_refused_with_the_smallest_that_works(dense):
    smallest = flash.make_plan(dense, 8 << 30, 256, file_backed=True).minimum_budget
    flash.make_plan(dense, smallest, 256, file_backed=True)  # the smallest named works
    with pytest.raises(UserError) as exc:
        flash.make_plan(dense, smallest - 1, 256, file_backed=True)
    assert "too small for dense.gguf" in exc.value.message
    assert "KV cache" in exc.value.message
    assert f"at least {-(-smallest // flash.MiB)}M" in exc.value.hint


def test_budget_setting_is_validated_when_set(tmp_path):
    assert parse_memory_budget("1.5G") == ("bytes", int(1.5 * (1 << 30)))
    assert parse_memory_budget("800MiB") == ("bytes", 800 << 20)
    assert parse_memory_budget("50%") == ("share", 0.5)
    assert parse_memory_budget("auto") == ("auto", 0)
    config = Config(tmp_path / "config.json")
    config.set_from_text("llm_memory_budget", "2G")
    config.save()
    assert Config.load(tmp_path / "config.json")["llm_memory_budget"] == "2G"
    for bad, why in (("lots", "not a size"), ("0%", "above 0%"), ("150%", "at most 100%"),
                     ("10M", "under 64M")):
        with pytest.raises(BadInputError, match=why):
            config.set_from_text("llm_memory_budget", bad)
    assert config["llm_memory_budget"] == "2G"
    (tmp_path / "bad.json").write_text('{"llm_memory_budget": "half"}')
    with pytest.raises(BadInputError, match="llm_memory_budget"):
        Config.load(tmp_path / "bad.json")


def test_budget_resolves_against_memory():
    info = {"MemTotal": 16 << 30, "MemAvailable": 8 << 30}
    assert flash.resolve_budget("1.5G", info) == int(1.5 * (1 << 30))
    assert flash.resolve_budget("auto", info) == 6 << 30  # a quarter of what is available kept back
    assert 0 < flash.resolve_budget("25%", info) <= 4 << 30


@pytest.mark.slow
def test_greedy_decoding_is_the_same_with_and_without_the_policy():
    """The packaged GGUF, resident vs file-backed with the policy streaming its FFN weights
    (budget just above the smallest that works) vs file-backed plain mmap."""
    from mneme.models.llama import LlamaLLM
    from mneme.models.registry import default_model_path

    path = default_model_path()
    layout = flash.read_layout(path)
    smallest = flash.make_plan(layout, 64 << 30, 512, file_backed=True).minimum_budget

    def decode(**kw):
        llm = LlamaLLM(path, n_ctx=512, n_threads=2, **kw)
        try:
            out = llm._llm.create_completion("The three largest cities in Europe are", max_tokens=24,
                                             temperature=0.0, top_k=1)
            return out["choices"][0]["text"], llm
        finally:
            llm.close()

    resident, llm0 = decode(budget=64 << 30)
    assert llm0.plan.mode == "resident" and llm0.memory_status()["mode"] == "resident"
    streamed, llm1 = decode(budget=smallest + (8 << 20), low_memory=True)
    assert llm1.plan.mode == "file-backed" and llm1.plan.streamed_bytes > 0
    assert llm1.placement.layer_events > 24  # compute followed through every token
    assert llm1.placement.nodes > 4 * layout.n_layer  # nodes per graph counted by ggml itself
    assert llm1.prefetch_off and llm1.memory_status()["policy"]
    plain, _ = decode(budget=smallest + (8 << 20), low_memory=True, policy=False)
    assert len(resident) > 20
    assert streamed == resident == plain


def test_status_and_doctor_report_the_mode_and_refuse_a_budget_too_small(tmp_path):
    """The real CLI, a memory in a temporary home and the dense test GGUF as answer model."""
    import json

    from tests.conftest import run_cli

    env = {"MNEME_PASSPHRASE": "test passphrase"}
    model = _write_gguf(tmp_path / "dense.gguf", moe=False)
    run_cli("init", "--passphrase", env=env)
    run_cli("config", "model_path", model, env=env)
    run_cli("config", "llm_memory_budget", "4G", env=env)
    status = json.loads(run_cli("status", "--json", env=env).stdout)["llm_memory"]
    assert status["mode"] == "resident" and status["budget"] == 4 << 30
    assert status["resident_bytes"] >= status["file_bytes"] and status["read_per_token"] is None
    assert "dense.gguf: resident; budget 4G (4G)" in run_cli("status", env=env).stdout

    proc = run_cli("config", "llm_memory_budget", "lots", env=env, check=False)
    assert proc.returncode != 0 and "not a size like 1.5G" in proc.stderr

    run_cli("config", "llm_memory_budget", "64M", env=env)
    out = run_cli("status", env=env).stdout
    assert "llm_memory_budget 64M is too small for dense.gguf" in out and "at least" in out
    doctor = run_cli("doctor", env=env, check=False)
    assert doctor.returncode == 1 and "problem: dense.gguf: llm_memory_budget 64M is too small" in doctor.stdout


@pytest.mark.gui
def test_settings_field_shows_the_mode_and_validates_the_budget(tmp_path, qtbot):
    from mneme.app.memory_budget import LlmMemoryField

    config = Config(tmp_path / "config.json")
    config.set("model_path", str(_write_gguf(tmp_path / "moe.gguf", moe=True)))
    config.set("llm_memory_budget", "3G")
    field = LlmMemoryField(config)
    qtbot.addWidget(field)
    qtbot.waitUntil(lambda: "moe.gguf: resident; budget 3G" in field.status.text(), timeout=10_000)
    assert "read per token" in field.status.text() or "not measured yet" in field.status.text()
    field.edit.setText("a lot")
    with pytest.raises(BadInputError, match="not a size"):
        field.apply(config)
    assert config["llm_memory_budget"] == "3G"
    field.edit.setText("70M")
    field.apply(config)
    field.refresh()
    qtbot.waitUntil(lambda: "70M is too small for moe.gguf" in field.status.text(), timeout=10_000)
    assert "non-expert tensors" in field.status.text()
