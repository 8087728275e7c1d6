"""Run `mneme key MODE` and kill -9 this very process at one step of the key change.

Usage: python -m tests.helpers.crash_key_change MODE STEP. The steps are the functions the
change is made of; the kill is a real SIGKILL, so nothing after it runs (no finally, no flush).
"""

import os
import random
import signal
import sys
import threading
import time

from mneme.app import cli
from mneme.core import keys
from mneme.core.store import Store


def die():
    os.kill(os.getpid(), signal.SIGKILL)


def after(owner, name):
    real = getattr(owner, name)

    def wrapped(*args, **kwargs):
        result = real(*args, **kwargs)
        die()
        return result

    setattr(owner, name, wrapped)


def during(owner, name, within: float):
    real = getattr(owner, name)

    def wrapped(*args, **kwargs):
        threading.Thread(target=lambda: (time.sleep(random.uniform(0, within)), die()), daemon=True).start()
        return real(*args, **kwargs)

    setattr(owner, name, wrapped)


def main(mode: str, step: str) -> None:
    if step == "pending":
        after(keys, "save_pending")
    elif step == "during-rekey":
        during(Store, "rekey", float(os.environ.get("CRASH_WITHIN", "0.05")))
    elif step == "rekey":
        after(Store, "rekey")
    elif step == "promote":
        after(keys, "promote_pending")
    elif step == "keyring-delete":
        after(keys, "keyring_delete")
    sys.exit(cli.main(["key", mode]))


if __name__ == "__main__":
    main(*sys.argv[1:3])
