"""Replay the drafts a model wrote in an earlier `locomo.py --answers --keep RUN_DIR` run through
the current answer pipeline, with no model: how a change to the check moves the answers, measured
on the very same drafts.

    python tests/bench/locomo_replay.py RUN_DIR EVERY [conv-26 ...]

EVERY is the --every of that run (1 for all questions; a run with --limit-questions works too).
"""
import json, os, sys, statistics, threading
from collections import defaultdict
from pathlib import Path
root = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(root))
os.environ.update(MNEME_PASSPHRASE="locomo bench", PYTHON_KEYRING_BACKEND="keyring.backends.fail.Keyring")
from tests.bench import locomo
from mneme.core.memory import open_memory
from mneme.core.assistant import Assistant
from mneme.models.embedder import default_embedder

run, every = Path(sys.argv[1]), int(sys.argv[2])
only = set(sys.argv[3:])

class Replay:
    id = "replay"
    n_ctx = 4096
    def __init__(self): self.draft = ""
    def count_tokens(self, text): return max(1, len(text) // 4)
    def prompt(self, i, c, q): return [(i, False), (c, True), (q, True)]
    def stream(self, prompt, max_tokens, cancel):
        for w in self.draft.split(" "):
            yield w + " "

samples = [s for s in json.loads(locomo.DEV.read_text()) if not only or s["sample_id"] in only]
f1, adv, shown, bad, statuses = defaultdict(list), [], 0, 0, defaultdict(int)
emb = default_embedder()
for s in samples:
    sid = s["sample_id"]
    saved = run / f"{sid}-answers.jsonl"
    if not saved.exists():
        continue
    os.environ["MNEME_HOME"] = str(run / sid)
    mem = open_memory(run / sid, embedder=emb)
    mem.wait_ready(120)
    llm = Replay()
    asst = Assistant(mem, llm)
    for q, line in zip(s["qa"][::every], saved.read_text().splitlines()):
        llm.draft = json.loads(line)["draft"]
        a = asst.ask(q["question"], remember=False).as_json()
        statuses[a["status"]] += 1
        unknown = a["status"] in ("unknown", "nothing")
        if q["category"] == 5:
            adv.append(unknown and not a["citations"])
        else:
            f1[q["category"]].append(locomo.token_f1(a["answer"], q["answer"]))
        if a["citations"] and not unknown:
            shown += 1
            bad += locomo.unsupported(a, q["question"])
    mem.close()
allf = [x for c in (1, 2, 3, 4) for x in f1[c]]
print(f"F1 1-4 {statistics.mean(allf):.3f} (" + " ".join(f"{c}:{statistics.mean(f1[c]):.3f}" for c in (1,2,3,4) if f1[c]) +
      f") | cat5 don't know {sum(adv)}/{len(adv)} | shown {shown}, lexically unsupported {bad} | {dict(statuses)}")
