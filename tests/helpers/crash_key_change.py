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


def inside_rekey(owner, name):
    """Kill as soon as the rekey's rollback journal exists: the rekey has begun rewriting pages and
    has not committed. A timer could miss a fast rekey; the journal's presence cannot."""
    real = getattr(owner, name)

    def wrapped(store, *args, **kwargs):
        journal = store.path.with_name(store.path.name + "-journal")

        def watch():
            while not journal.exists():
                time.sleep(0.0002)
            die()

        threading.Thread(target=watch, daemon=True).start()
        real(store, *args, **kwargs)
        time.sleep(5)  # only reached if the watcher missed it: the test then sees no -9 and fails

    setattr(owner, name, wrapped)


def main(mode: str, step: str) -> None:
    if step == "pending":
        after(keys, "save_pending")
    elif step == "during-rekey" and "CRASH_WITHIN" in os.environ:
        during(Store, "rekey", float(os.environ["CRASH_WITHIN"]))
    elif step == "during-rekey":
        inside_rekey(Store, "rekey")
    elif step == "rekey":
        after(Store, "rekey")
    elif step == "promote":
        after(keys, "promote_pending")
    elif step == "keyring-delete":
        after(keys, "keyring_delete")
    sys.exit(cli.main(["key", mode]))


if __name__ == "__main__":
    main(*sys.argv[1:3])
