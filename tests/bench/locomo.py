"""LoCoMo dev split, measured as the held-out split is (see ../shared/eval/README.md).

Each conversation goes into its own fresh memory through ``mneme import chats`` (generic JSONL),
every question of categories 1-4 through ``mneme search --batch FILE --json --limit 25``, and with
``--answers`` every question through ``mneme ask --batch FILE --json``. Prints a Markdown report.

    python tests/bench/locomo.py [--answers] [--only conv-26] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import string
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEV = ROOT.parent / "shared" / "eval" / "locomo-dev.json"
CATEGORIES = {1: "multi-hop", 2: "temporal", 3: "open-domain", 4: "single-hop", 5: "adversarial"}
DONT_KNOW = re.compile(r"\b(don't know|do not know|not (?:in|found in) (?:your )?memory|"
                       r"found nothing|no (?:record|mention)|cannot find|can't find|not sure)\b", re.I)


def session_time(text: str) -> datetime:
    """"1:56 pm on 8 May, 2023" -> a datetime (taken as UTC, so times print as written)."""
    return datetime.strptime(text.strip(), "%I:%M %p on %d %B, %Y").replace(tzinfo=timezone.utc)


def to_jsonl(sample: dict) -> list[dict]:
    conv = sample["conversation"]
    rows = []
    n = 1
    while f"session_{n}" in conv:
        start = session_time(conv[f"session_{n}_date_time"])
        for i, turn in enumerate(conv[f"session_{n}"]):
            text = turn["text"]
            if turn.get("blip_caption"):
                text += f" [shares a photo: {turn['blip_caption']}]"
            rows.append({"id": turn["dia_id"], "conversation": sample["sample_id"], "speaker": turn["speaker"],
                         "text": text, "time": (start + timedelta(seconds=30 * i)).isoformat()})
        n += 1
    return rows


def normalize(text) -> list[str]:
    text = str(text).lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return text.split()


def token_f1(prediction: str, gold) -> float:
    p, g = normalize(prediction), normalize(gold)
    if not p or not g:
        return 0.0
    common = defaultdict(int)
    for w in g:
        common[w] += 1
    same = 0
    for w in p:
        if common[w] > 0:
            same += 1
            common[w] -= 1
    if same == 0:
        return 0.0
    precision, recall = same / len(p), same / len(g)
    return 2 * precision * recall / (precision + recall)


def recall_at(hits: list[dict], evidence: list[str], k: int) -> float:
    ids: list[str] = []
    for hit in hits:
        for src in hit.get("sources", []):
            if src["external_id"] not in ids:
                ids.append(src["external_id"])
        if len(ids) >= k:
            break
    ids = ids[:k]
    return sum(1 for e in evidence if e in ids) / len(evidence) if evidence else 0.0


def mneme(home: Path, *args: str, timeout: float = 3600) -> str:
    env = dict(os.environ, MNEME_PASSPHRASE="locomo bench", MNEME_HOME=str(home),
               PYTHON_KEYRING_BACKEND="keyring.backends.fail.Keyring")
    proc = subprocess.run([sys.executable, "-m", "mneme.app", *args], capture_output=True, text=True,
                          env=env, timeout=timeout, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"mneme {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return proc.stdout


CONTENT = re.compile(r"[a-z0-9]+")
GLUE = frozenset("""a an the and or but of to in on at for with by from is are was were be been it its
that this these those i you he she they we me him her them my your his their our as so not no yes do did
does have has had will would can could about into over than then there here what when where who which how
memory has your because lot lots said says im ive its youre theyre hey wow yes shes hes theyve weve
youve ill youll hell shell id""".split())


def crude_stem(word: str) -> str:
    """Inflections alike (loved / love, experiences / experience), independent of Mneme's own check."""
    for suffix in ("ing", "ed", "es", "s", "d", "ly"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[:-len(suffix)]
            break
    return word.rstrip("e")


def unsupported(answer: dict, question: str) -> bool:
    """Independent of Mneme's own check: a shown answer whose content words are not all in the text
    of the excerpts it cites (or the question) counts as containing an unsupported claim."""
    text = re.sub(r"\[\d+\]", " ", answer["answer"])
    cited = " ".join(c.get("text", "") + " " + c.get("speaker", "") + " " + (c.get("time") or "")
                     + " " + c.get("when", "") for c in answer["citations"]).lower()
    cited, text = (re.sub(r"['\u2019]", "", x) for x in (cited, text))  # can't = cant on both sides
    allowed = set(CONTENT.findall(cited)) | set(CONTENT.findall(question.lower()))
    stems = {crude_stem(w) for w in allowed}
    words = [w for w in CONTENT.findall(text.lower()) if w not in GLUE and len(w) > 2]
    return any(w not in allowed and crude_stem(w) not in stems for w in words)


def check_rates(samples: list[dict], seed: int = 0) -> str:
    """How often the support check is wrong, with no model: each gold answer, as a claim, against
    its own evidence turns (should pass) and against three other turns (should fail)."""
    import random

    sys.path.insert(0, str(ROOT))
    from mneme.core.assistant import Citation, fence
    from mneme.core.reltime import resolve

    rng = random.Random(seed)
    passed = rejected_good = accepted_bad = bad_total = good_total = 0
    for sample in samples:
        turns = {r["id"]: r for r in to_jsonl(sample)}

        def evidence(tid):
            r = turns[tid]
            t = datetime.fromisoformat(r["time"]).timestamp()
            return Citation(1, [0], t, "", "chat", fence(resolve(r["text"], t)), speaker=r["speaker"]).evidence()

        from mneme.core.support import check
        for q in sample["qa"]:
            if q["category"] == 5 or not all(e in turns for e in q["evidence"]):
                continue
            claim = str(q["answer"])
            good_total += 1
            if check(claim, [evidence(e) for e in q["evidence"]], q["question"]).supported:
                passed += 1
            else:
                rejected_good += 1
            others = [t for t in turns if t not in q["evidence"]]
            for tid in rng.sample(others, 3):
                bad_total += 1
                accepted_bad += check(claim, [evidence(tid)], q["question"]).supported
    return (f"support check on gold answers: {passed}/{good_total} ({100 * passed / good_total:.1f} %) backed by "
            f"their evidence turns (wrongly refused: {100 * rejected_good / good_total:.1f} %); "
            f"{accepted_bad}/{bad_total} ({100 * accepted_bad / bad_total:.1f} %) wrongly accepted "
            "against a random other turn")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(DEV))
    ap.add_argument("--answers", action="store_true", help="also ask every question (slow: the LLM)")
    ap.add_argument("--only", help="one sample id, e.g. conv-26")
    ap.add_argument("--keep", help="keep the homes and outputs in this folder")
    ap.add_argument("--model", help="a GGUF for the answers (default: the setting)")
    ap.add_argument("--limit-questions", type=int, help="first N questions of each conversation")
    ap.add_argument("--every", type=int, help="every Nth question of each conversation (all categories)")
    ap.add_argument("--rescore", action="store_true",
                    help="score the answers saved in --keep DIR again, asking nothing")
    ap.add_argument("--check", action="store_true", help="only measure the support check (no model)")
    args = ap.parse_args()
    samples = json.loads(Path(args.data).read_text())
    if args.only:
        samples = [s for s in samples if s["sample_id"] == args.only]
    if args.check:
        print(check_rates(samples))
        return 0
    if args.rescore and not args.keep:
        raise SystemExit("--rescore needs --keep DIR, the folder of an earlier run")
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="mneme-locomo-"))
    work.mkdir(parents=True, exist_ok=True)
    rec = {k: defaultdict(list) for k in (5, 10)}
    f1 = defaultdict(list)
    search_ms, shown, bad, dont_know_adv, answered_adv = [], 0, 0, 0, 0
    ttft, model_ttft, seconds, statuses = [], [], [], defaultdict(int)
    bad_examples = []
    for sample in samples:
        sid = sample["sample_id"]
        home = work / sid
        data = work / f"{sid}.jsonl"
        qa = sample["qa"][:args.limit_questions] if args.limit_questions else sample["qa"]
        qa = qa[::args.every] if args.every else qa
        retr = [q for q in qa if q["category"] != 5]
        qfile = work / f"{sid}-search.jsonl"
        if args.rescore:
            saved = work / f"{sid}-hits.jsonl"
            out = saved.read_text() if saved.exists() else ""  # older runs kept no hits
        else:
            data.write_text("".join(json.dumps(r) + "\n" for r in to_jsonl(sample)))
            mneme(home, "import", "chats", str(data), "--format", "jsonl")
            qfile.write_text("".join(json.dumps({"query": q["question"]}) + "\n" for q in retr))
            t = time.perf_counter()
            out = mneme(home, "search", "--batch", str(qfile), "--json", "--limit", "25")
            search_ms.append((time.perf_counter() - t) * 1000 / max(1, len(retr)))
            (work / f"{sid}-hits.jsonl").write_text(out)
        for q, line in zip(retr, out.splitlines()):
            hits = json.loads(line)["hits"]
            for k in (5, 10):
                rec[k][q["category"]].append(recall_at(hits, q["evidence"], k))
        if not args.answers:
            continue
        afile = work / f"{sid}-ask.jsonl"
        afile.write_text("".join(json.dumps({"question": q["question"]}) + "\n" for q in qa))
        extra = ["--model", args.model] if args.model else []
        if args.rescore:
            out = (work / f"{sid}-answers.jsonl").read_text()
        else:
            # a minute a question: conv-41's 193 questions outran a flat hour on a loaded machine
            out = mneme(home, "ask", "--batch", str(afile), "--json", *extra,
                        timeout=max(3600, 60 * len(qa)))
            (work / f"{sid}-answers.jsonl").write_text(out)
        for q, line in zip(qa, out.splitlines()):
            a = json.loads(line)
            if a.get("first_token_s") is not None:
                ttft.append(a["first_token_s"])
            if a.get("model_first_token_s") is not None:
                model_ttft.append(a["model_first_token_s"])
            seconds.append(a.get("seconds", 0.0))
            statuses[a.get("status", "")] += 1
            says_unknown = bool(DONT_KNOW.search(a["answer"])) or a.get("status") in ("unknown", "nothing")
            if q["category"] == 5:
                answered_adv += 1
                ok = says_unknown and not a["citations"]
                dont_know_adv += ok
                f1[5].append(1.0 if ok else 0.0)
            else:
                f1[q["category"]].append(token_f1(a["answer"], q["answer"]))
            if a["citations"] and not says_unknown:
                shown += 1
                if unsupported(a, q["question"]):
                    bad += 1
                    if len(bad_examples) < 20:
                        bad_examples.append((q["question"], a["answer"]))
    lines = [f"### LoCoMo dev ({', '.join(s['sample_id'] for s in samples)}) — "
             f"{datetime.now(timezone.utc):%Y-%m-%d}, {platform.node()} ({os.cpu_count()} cores)",
             "", "| category | questions | recall@5 | recall@10 |" + (" answer F1 |" if args.answers else ""),
             "|---|---|---|---|" + ("---|" if args.answers else "")]
    allq5, allq10 = [], []
    for cat in (1, 2, 3, 4):
        r5, r10 = rec[5][cat] or [float("nan")], rec[10][cat] or [float("nan")]
        allq5 += r5
        allq10 += r10
        row = f"| {cat} {CATEGORIES[cat]} | {len(rec[5][cat])} | {statistics.mean(r5):.3f} | {statistics.mean(r10):.3f} |"
        if args.answers:
            row += f" {statistics.mean(f1[cat]):.3f} |"
        lines.append(row)
    row = f"| **1–4** | {len(allq5)} | **{statistics.mean(allq5):.3f}** | **{statistics.mean(allq10):.3f}** |"
    if args.answers:
        row += f" {statistics.mean([x for c in (1, 2, 3, 4) for x in f1[c]]):.3f} |"
    lines.append(row)
    lines.append(f"\nsearch: {statistics.median(search_ms) if search_ms else float('nan'):.1f} ms a question (mean over a batch run, "
                 "model-free, process start included)")
    if args.answers:
        lines += [f"answers: {shown} shown with citations; {bad} of them "
                  f"({100 * bad / max(1, shown):.1f} %) hold a content word found in neither the cited "
                  "excerpts nor the question",
                  f"adversarial (cat 5): {dont_know_adv}/{answered_adv} "
                  f"({100 * dont_know_adv / max(1, answered_adv):.1f} %) say they do not know and cite nothing",
                  f"time to first token: p50 {statistics.median(ttft) if ttft else float('nan'):.2f} s "
                  f"to the first shown word, {statistics.median(model_ttft) if model_ttft else float('nan'):.2f} s "
                  f"to the model's first token; whole answer p50 {statistics.median(seconds):.2f} s",
                  "statuses: " + ", ".join(f"{k or '?'} {v}" for k, v in sorted(statuses.items()))]
        for question, answer in bad_examples:
            lines.append(f"- unsupported? {question!r} -> {answer!r}")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
