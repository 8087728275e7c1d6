"""Logging to a rotating file in the home. Never log captured text, keys or passphrases."""

from __future__ import annotations

import logging
import logging.handlers
from pathlib import Path

from mneme.core.paths import ensure_private_dir, private_file


def setup(log_dir: Path, verbose: bool = False) -> None:
    ensure_private_dir(log_dir)
    path = log_dir / "mneme.log"
    handler = logging.handlers.RotatingFileHandler(path, maxBytes=2_000_000, backupCount=3,
                                                   encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        if isinstance(old, logging.handlers.RotatingFileHandler):
            root.removeHandler(old)
            old.close()
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    for noisy in ("chromadb", "httpx", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    private_file(path)
