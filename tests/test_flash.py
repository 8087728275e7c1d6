"""Flash offload: the GGUF layout, the plan within a memory budget, the budget setting, and
greedy decoding that is token-for-token the same with and without the placement policy."""

from __future__ import annotations

import os

import numpy as np
import pytest

from mneme.core.config import Config, parse_memory_budget
from mneme.core.errors import BadInputError, UserError
from mneme.models import flash, placement

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
N_LAYER, N_EMBD, N_FF, N_VOCAB, N_EXPERT = 12, 64, 1024, 512, 4


def _write_gguf(path, moe: bool):
    """A llama-shaped GGUF with random f32 weights; MoE-shaped: routed experts plus a router."""
    from tests.helpers.gguf_models import write_llama

    return write_llama(path, n_layer=N_LAYER, n_embd=N_EMBD, n_ff=N_FF // 4 if moe else N_FF, n_head=4,
                       n_head_kv=2, n_vocab=N_VOCAB, n_expert=N_EXPERT if moe else 0,
                       context_length=256)


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
    assert kinds["blk.2.ffn_up.weight"] == "layer" and kinds["blk.2.ffn_norm.weight"] == "always"
    assert kinds["blk.0.attn_q.weight"] == "layer" and kinds["blk.0.attn_norm.weight"] == "always"
    assert kinds["output.weight"] == "always"
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
    assert kinds["blk.1.attn_q.weight"] == "layer"  # a layer's matrix: pinned in a MoE plan


def test_large_budget_is_all_resident(dense):
    plan = flash.make_plan(dense, 8 << 30, n_ctx=256)
    assert plan.mode == "resident" and not plan.streamed
    assert plan.summary()["mode"] == "resident"


def test_moe_plan_pins_all_but_the_experts_and_caches_them_in_the_rest(moe):
    lo = flash.make_plan(moe, 8 << 30, 256, file_backed=True).minimum_budget
    experts = {t.name for t in moe.tensors if t.kind == "expert"}
    for budget in np.linspace(lo, lo + moe.file_size, 9).astype(int):
        plan = flash.make_plan(moe, int(budget), 256, file_backed=True)
        assert plan.mode == "file-backed" and plan.moe
        assert not plan.streamed and {t.name for t in plan.experts} == experts
        # (an untied token embedding is read a row per token, like plain mmap reads it)
        assert {t.name for t in plan.pinned} == {t.name for t in moe.tensors if t.kind != "sparse"} - experts
        assert plan.pinned_bytes + plan.expert_room + plan.kv_bytes + plan.work_bytes == budget
        assert plan.resident_bytes == budget and plan.summary()["expert_cache_bytes"] == plan.expert_room
    # the smallest cache holds every expert of a layer: a prompt pass may route to them all
    layer = sum(t.size for t in moe.tensors if t.kind == "expert" and t.layer == 0)
    assert flash.make_plan(moe, lo, 256, file_backed=True).expert_room == layer
    with pytest.raises(UserError) as exc:
        flash.make_plan(moe, lo - 1, 256, file_backed=True)
    assert "non-expert tensors" in exc.value.message and "every expert of one layer" in exc.value.message


def test_pinned_set_stays_within_budget(dense):
    layout = dense
    file_bytes = layout.file_size
    lo = flash.make_plan(layout, 8 << 30, 256, file_backed=True).minimum_budget
    seen_streamed = set()
    for budget in np.linspace(lo, lo + file_bytes, 9).astype(int):
        plan = flash.make_plan(layout, int(budget), 256, file_backed=True)
        assert plan.mode == "file-backed"
        used = plan.pinned_bytes + plan.window_bytes + plan.kv_bytes + plan.work_bytes
        assert used <= budget
        # the budget is filled: whole tensors, then the leading pages of the next streamed ones
        assert not plan.streamed or budget - used < 2 * flash.PAGE
        always = {t.name for t in layout.tensors if t.kind == "always"}
        assert always <= {t.name for t in plan.pinned}
        # every byte of every layer tensor is pinned or streamed, never both; a split tensor is
        # split at a page boundary (its pinned head is locked, its tail read and dropped)
        streamed = [t for ts in plan.streamed.values() for t in ts]
        spans = sorted((t.offset, t.offset + t.size) for t in plan.pinned + streamed
                       if t.kind != "always")
        assert all(a[1] == b[0] or a[1] < b[0] for a, b in zip(spans, spans[1:]))
        layered = sum(t.size for t in layout.tensors if t.kind in ("layer", "expert"))
        assert sum(b - a for a, b in spans) == layered
        whole = {t.name: t for t in layout.tensors}
        for t in streamed:
            if t.size != whole[t.name].size:
                assert t.offset % flash.PAGE == 0 and t.offset + t.size == whole[t.name].offset + whole[t.name].size
        # streamed bytes are spread evenly over the layers (the read-ahead window is then the
        # smallest): equal up to the page rounding of each layer's cut
        per_layer = [sum(t.size for t in plan.streamed.get(i, ())) for i in range(layout.n_layer)]
        assert max(per_layer) - min(per_layer) <= (layout.n_layer + 1) * flash.PAGE, per_layer
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


_MEASURE = r"""
import json, logging, re, sys, threading
import llama_cpp  # imported before measuring: the library is not the model's
from mneme.core.assistant import INSTRUCTIONS
from mneme.models.llama import LlamaLLM
from mneme.models.registry import default_model_path
from tests.test_flash import ANSWER_CONTEXT

def anon():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("RssAnon:"))

logged = []
class Keep(logging.Handler):
    def emit(self, record):
        logged.append(record.getMessage())
logger = logging.getLogger("mneme.llama")
logger.setLevel(logging.DEBUG)
logger.addHandler(Keep())
before = anon()
llm = LlamaLLM(default_model_path(), n_ctx=2048, n_threads=2, budget=8 << 30, low_memory=True,
               lookup=True)  # its verifying passes ask for the most logits
text = "".join(llm.stream(llm.prompt(INSTRUCTIONS, ANSWER_CONTEXT, "When does the new lease start "
                                     "and how much is the rent?"), 48, threading.Event()))
grown = anon() - before
kv = sum(float(m) for m in re.findall(r"KV buffer size =\s*([\d.]+) MiB", "\n".join(logged)))
print(json.dumps({"text": text, "grown": grown, "kv_logged": kv * (1 << 20), **llm.memory_status()}))
"""


@pytest.mark.slow
def test_working_memory_estimate_covers_what_llama_cpp_takes():
    """The plan's KV cache and working memory against llama.cpp's own, in a fresh process: its
    logged KV buffers are within the KV estimate, and the anonymous memory the process gains
    while the packaged model (file-backed, prompt lookup on) loads and answers is within KV +
    working memory, and not far below it (an estimate too high leaves budget unused)."""
    import json
    import subprocess
    import sys

    from tests.conftest import ROOT

    proc = subprocess.run([sys.executable, "-c", _MEASURE], capture_output=True, text=True, cwd=ROOT,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    m = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(m["text"]) > 10 and m["mode"] == "file-backed" and m["n_ubatch"] == flash.FILE_BACKED_UBATCH
    assert m["lookup"] and m["guessed"] > 0
    assert 0 < m["kv_logged"] <= m["kv_bytes"]
    need = m["kv_bytes"] + m["work_bytes"]
    assert need - 64 * flash.MiB <= m["grown"] <= need, (m["grown"], m["kv_bytes"], m["work_bytes"])


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


ANSWER_CONTEXT = ("<memory>\n"
                  "[1] (2026-11-18 09:12, chat · Flat hunting) Maya: the viewing is moved to Thursday at 5, "
                  "bring the payslips\n"
                  "[2] (2026-11-20 14:02, mail · Thunderbird) Hausverwaltung Keller: the new lease starts "
                  "on 1 February and the monthly rent goes up to 1,240 euros including heating\n"
                  "[3] (2026-11-23 08:47, screen · Notes) moving checklist: cancel the internet contract "
                  "by 31 January, book the van for 2 February\n</memory>")


def _copy_cold(src, dst):
    """A copy of the packaged model that no other process maps, out of the page cache."""
    import shutil

    shutil.copyfile(src, dst)
    fd = os.open(dst, os.O_RDONLY)
    os.fsync(fd)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(fd)
    return dst


@pytest.mark.slow
def test_prompt_lookup_keeps_greedy_answers_the_same(tmp_path):
    """The packaged GGUF streaming its layers' weights, answering Mneme's ask prompt through
    LlamaLLM.stream (its stops and repeat penalty): the same text with prompt lookup as without,
    and as plain mmap; the guesses were really made and some accepted. (Lookup verifies guesses
    in passes of several tokens, whose logits differ a little from one-token passes: a near tie
    can go the other way, so lookup's text is not the same for every prompt — BENCHMARKS.md,
    "Sixth look" — but on these it is, and wrong logits rows would change them all.) Lookup is
    asked for: this model's tied output matrix, always pinned, keeps what streams under
    LOOKUP_STREAMED."""
    import threading

    from mneme.core.assistant import INSTRUCTIONS
    from mneme.models.llama import LlamaLLM
    from mneme.models.registry import default_model_path

    path = default_model_path()
    smallest = flash.make_plan(flash.read_layout(path), 64 << 30, 2048, file_backed=True).minimum_budget
    questions = ("When does the new lease start and how much is the rent?",
                 "What must be cancelled by 31 January?")

    def answers(**kw):
        llm = LlamaLLM(path, n_ctx=2048, n_threads=2, **kw)
        try:
            out = ["".join(llm.stream(llm.prompt(INSTRUCTIONS, ANSWER_CONTEXT, q), 48, threading.Event()))
                   for q in questions]
            return out, llm.memory_status()
        finally:
            llm.close()

    budget = smallest + (8 << 20)
    looked, status = answers(budget=budget, low_memory=True, lookup=True)
    assert status["mode"] == "file-backed" and status["lookup"] and status["streamed_bytes"] > 0
    without, status0 = answers(budget=budget, low_memory=True, lookup=False)
    assert not status0["lookup"]
    plain, status1 = answers(budget=budget, low_memory=True, policy=False)
    assert not status1["lookup"] and not status1["policy"]
    assert all(len(a) > 10 for a in without), without
    # (Resident is not compared: its repacked weights round differently, and on this prompt its
    # last token differs from file-backed, with or without the policy and lookup.)
    assert looked == without == plain
    assert status["guessed"] > 0 and status["accepted"] > 0  # guesses were made and taken


@pytest.mark.parametrize("streaming", ["nothing", "a little", "most"])
def test_prompt_lookup_is_on_only_when_much_streams(streaming, tmp_path):
    """A file-backed plan that pins every weight (a budget a little short of resident) reads
    nothing per pass, and one that streams a little reads little: compute dominates, and
    rejected guesses would only cost time. Streaming most of the weights, lookup is on."""
    from mneme.models.llama import LOOKUP_STREAMED, LlamaLLM
    from tests.helpers.gguf_models import write_llama

    path = write_llama(tmp_path / "dense-q8.gguf", n_layer=8, n_embd=512, n_ff=2048, n_head=4,
                       n_head_kv=2, n_vocab=1024, q8=True, vocab=True, context_length=512)
    layout = flash.read_layout(path)

    def share(budget: int) -> float:
        return flash.make_plan(layout, budget, 512, file_backed=True).streamed_bytes / layout.file_size

    budget = 64 << 30
    if streaming != "nothing":  # the smallest budget streams most; bisect to a tenth for "a little"
        lo = flash.make_plan(layout, budget, 512, file_backed=True).minimum_budget
        if streaming == "a little":
            hi = lo + layout.file_size
            while hi - lo > flash.PAGE:
                mid = (lo + hi) // 2
                lo, hi = (mid, hi) if share(mid) > 0.1 else (lo, mid)
        budget = lo
    assert (share(budget) > LOOKUP_STREAMED) == (streaming == "most")
    llm = LlamaLLM(path, n_ctx=512, n_threads=2, budget=budget, low_memory=True)
    try:
        status = llm.memory_status()
        assert status["mode"] == "file-backed"
        assert (status["streamed_bytes"] > 0) == (streaming != "nothing")
        assert status["lookup"] == (streaming == "most") == (llm.lookup is not None)
    finally:
        llm.close()


@pytest.mark.slow
def test_capture_and_search_keep_working_while_a_budgeted_model_answers(open_mem, tmp_path):
    """The capture service stores frames and search answers while the packaged model, file-backed
    within a budget, answers in the same process; meanwhile the model's weights in the page cache
    (mincore on the file, every 5 ms) stay near what the plan keeps resident, and with its KV
    cache and working memory the model stays within its budget. The same sampling on plain mmap
    sees the weights grow past that (what the measurement can catch)."""
    import threading
    import time

    from mneme.capture.service import CaptureService
    from mneme.core.assistant import INSTRUCTIONS
    from mneme.models.llama import LlamaLLM
    from mneme.models.registry import default_model_path
    from tests.test_capture_units import FakeDesktop, frames, line_ocr

    class EndlessScreen:  # a screen whose content keeps changing
        def __init__(self):
            self.frames, self.n = frames(12), 0

        def monitors(self):
            from mneme.capture.screen import Monitor

            return [Monitor(1, 0, 0, 320, 240)]

        def grab(self, mon):
            self.n += 1
            return self.frames[self.n % len(self.frames)].copy()

        def close(self):
            pass

    model = _copy_cold(default_model_path(), tmp_path / "model.gguf")
    smallest = flash.make_plan(flash.read_layout(model), 64 << 30, 2048, file_backed=True).minimum_budget
    budget = smallest + (8 << 20)
    mem = open_mem()
    screen = EndlessScreen()
    svc = CaptureService(mem, FakeDesktop, lambda: screen, interval=0.05, idle_after=0, ocr_fn=line_ocr)

    def answer_while_sampling(**kw):
        llm = LlamaLLM(model, n_ctx=2048, n_threads=2, budget=budget, low_memory=True, **kw)
        peak, done = [0], threading.Event()

        def sample():
            while not done.is_set():
                peak[0] = max(peak[0], placement.cached_bytes(model))
                time.sleep(0.005)

        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            frames_before = mem.store.frame_usage()[0]
            text = "".join(llm.stream(llm.prompt(INSTRUCTIONS, ANSWER_CONTEXT, "When does the new lease "
                                                 "start?"), 48, threading.Event()))
            hits = mem.search("text", limit=5).hits
            stored = mem.store.frame_usage()[0] - frames_before
        finally:
            done.set()
            sampler.join()
            plan = llm.plan
            llm.close()
        return text, stored, hits, peak[0], plan

    svc.start()
    try:
        assert svc.state == "running"
        text, stored, hits, peak, plan = answer_while_sampling()
        assert len(text) > 10
        assert stored >= 3 and hits, "capture or search stalled while the model answered"
        assert svc.state == "running" and svc.error is None
        # What the plan keeps (its window has room for the layers compute may run past the
        # reader), and a page per range (ranges are page-rounded outward).
        kept = plan.pinned_bytes + plan.window_bytes
        slack = flash.PAGE * (len(plan.pinned) + sum(len(ts) for ts in plan.streamed.values()) + 2)
        assert plan.streamed_bytes > 0 and peak <= kept + slack, (peak, kept)
        assert peak + plan.kv_bytes + plan.work_bytes <= budget + slack
        fd = os.open(model, os.O_RDONLY)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)
        *_, plain_peak, _ = answer_while_sampling(policy=False)
        assert plain_peak > kept + slack  # plain mmap keeps every page it touched
    finally:
        svc.close()


@pytest.mark.slow
@pytest.mark.parametrize("router", ["seen", "not seen"])
def test_a_moe_model_decodes_the_same_with_its_experts_held_in_a_bounded_cache(tmp_path, monkeypatch, router):
    """A runnable MoE GGUF (8 experts, 2 a token) whose expert cache holds a quarter of its
    experts: greedy decoding as with plain mmap (both unrepacked: a repacked resident model may
    round a near tie of this random model apart), experts dropped to keep the cache within its room,
    and fewer bytes read per token than every expert (the cache keeps some between tokens). With
    the router's choice seen, experts are read as chosen; without (a graph that does not name it),
    the cache is held by the look after each pass."""
    from tests.helpers.gguf_models import write_llama
    from mneme.models import llama
    from mneme.models.llama import LlamaLLM

    if router == "not seen":
        monkeypatch.setattr(llama, "_router_callback", lambda placement: None)

    path = write_llama(tmp_path / "moe-q8.gguf", n_layer=8, n_embd=512, n_ff=1024, n_head=4,
                       n_head_kv=2, n_vocab=1024, q8=True, n_expert=8, n_expert_used=2,
                       vocab=True, context_length=512)
    layout = flash.read_layout(path)
    experts = sum(t.size for t in layout.tensors if t.kind == "expert")
    smallest = flash.make_plan(layout, 64 << 30, 512, file_backed=True).minimum_budget

    def decode(**kw):
        llm = LlamaLLM(path, n_ctx=512, n_threads=2, **kw)
        try:
            before = placement.read_bytes()
            out = llm._llm.create_completion(list(range(100, 108)), max_tokens=24, temperature=0.0,
                                             top_k=1)
            read = placement.read_bytes() - before
            if llm.placement is not None:
                llm.placement.settle()
            return out["choices"][0]["text"], read, placement.cached_bytes(path), llm
        finally:
            llm.close()

    plain, *_ = decode(budget=smallest + experts // 4, low_memory=True, policy=False)
    fd = os.open(path, os.O_RDONLY)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(fd)
    # (prompt lookup is off by default for an expert cache: each guessed token would route to
    # experts of its own, read for the pass)
    text, read, cached, llm = decode(budget=smallest + experts // 4, low_memory=True)
    assert llm.lookup is None
    plan = llm.plan
    assert plan.mode == "file-backed" and plan.moe and plan.expert_room < experts
    assert text == plain and len(plain) > 20
    if router == "seen":
        assert llm.placement.routed >= 8 * 24  # every layer's router choice, every token
    else:
        assert llm.placement.routed == 0
    assert llm.placement.evicted > 0
    slack = flash.PAGE * (len(plan.pinned) + 3 * len(llm.placement.units) + 2)
    assert cached <= plan.pinned_bytes + plan.expert_room + slack, (cached, plan.pinned_bytes, plan.expert_room)
    assert read < 24 * experts
