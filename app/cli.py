"""``mneme``: the command line. A thin client of ``mneme.core``; every command is one call into it."""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import os
import signal
import sys
import threading
from datetime import datetime
from pathlib import Path

from mneme import __version__
from mneme.core import memory as memory_api
from mneme.core.errors import UserError
from mneme.core.paths import HomeLayout, resolve_home
from mneme.core.records import iso
from mneme.core.timefilter import parse_date

log = logging.getLogger("mneme.cli")


# -- helpers ------------------------------------------------------------------------------------
def _progress(desc: str, total: int | None = None, unit: str = "it"):
    from tqdm import tqdm

    force = os.environ.get("MNEME_PROGRESS") == "1"
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True,
                disable=False if force else None, leave=False)


def _ask_secret(question: str, env: str, what: str = "a passphrase", twice: bool = False) -> str:
    """From the environment variable *env* if set (automation), else asked on the terminal —
    twice for a new one."""
    if os.environ.get(env):
        return os.environ[env]
    if not sys.stdin.isatty():
        raise UserError(f"{what} is needed and there is no terminal to ask on", f"set {env}")
    first = getpass.getpass(question)
    if twice and getpass.getpass("Repeat: " + question) != first:
        raise UserError("the two passphrases differ", "run the command again")
    return first


def _prompt(question: str) -> str:
    return _ask_secret(question, "MNEME_PASSPHRASE")


def _prompt_new(question: str) -> str:
    return _ask_secret(question, "MNEME_PASSPHRASE", twice=True)


def _date(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return parse_date(value)
    except ValueError as exc:
        raise UserError(str(exc), "dates look like 2024-03-05 or '2024-03-05 14:00'") from None


def _open(args, create: bool = True, warm: bool = True, embedder: bool = True, key_mode=None):
    from mneme import models  # registers the embedder

    emb = models.default_embedder() if embedder else None
    mem = memory_api.open_memory(args.home, embedder=emb, passphrase=_prompt_new if create else _prompt,
                                 create=create, key_mode=key_mode, warm=warm)
    if not memory_api.home_exists(args.home):
        raise UserError("memory was not created", "see the log")
    return mem


def _wait_index(mem) -> None:
    """Wait for the vector index while it loads; if it cannot be had, say so and go on with
    keyword search (never wait for ever)."""
    if mem.index is not None and not mem.index.ready.is_set():
        bar = _progress("loading index", unit="vec")

        def show(loaded: int, total: int) -> None:
            bar.total, bar.n = total, loaded
            bar.refresh()

        mem.wait_index(show)
        bar.close()
    problem = mem.index_problem()
    if problem:
        print(f"mneme: note: {problem.replace('a doctor run', '`mneme doctor`')}", file=sys.stderr)


def _embed(mem) -> None:
    counts = mem.store.counts(mem.embedder.id)
    todo = counts["chunks"] - counts["embedded"]
    if todo <= 0:
        return
    bar = _progress("embedding", total=todo, unit="chunk")
    mem.embed_pending(progress=lambda done, total: bar.update(done - bar.n))
    bar.close()


def _filters(args) -> dict:
    return {"since": _date(args.since), "until": _date(args.until), "app": args.app}


def _print_hit(n: int, hit) -> None:
    when = datetime.fromtimestamp(hit.time).astimezone().strftime("%Y-%m-%d %H:%M")
    where = " · ".join(p for p in (hit.app, hit.title) if p)
    text = " ".join(hit.text.split())
    print(f"{n:>2}. {when}  {where}  (sources {', '.join(map(str, hit.source_ids))})")
    print(f"    {(hit.speaker + ': ') if hit.speaker else ''}{text[:300]}")


def _load_llm(mem, model: str | None):
    from mneme.models.registry import load_llm

    return load_llm(mem.config, model)


# -- commands -----------------------------------------------------------------------------------
def cmd_init(args) -> int:
    if memory_api.home_exists(args.home):
        raise UserError(f"there is already a memory in {resolve_home(args.home)}",
                        "use `mneme key passphrase|keyring` to change how it is locked")
    with _open(args, key_mode="passphrase" if args.passphrase else "keyring", warm=False,
               embedder=False) as mem:
        print(f"Created an encrypted memory in {mem.home} ({mem.meta.mode} mode).")
    return 0


def cmd_import_chats(args) -> int:
    from mneme.capture.chats import parse_file

    parsed = parse_file(args.file, args.format, skip_bad=args.skip_bad)
    with _open(args, warm=False) as mem:
        bar = _progress(f"importing {parsed.format}", total=len(parsed.messages), unit="msg")
        added, skipped = mem.import_messages(parsed.messages,
                                             progress=lambda done, total: bar.update(done - bar.n))
        bar.close()
        _embed(mem)
    print(f"Imported {added} messages from {args.file} ({parsed.format}); "
          f"{skipped} were already in memory.")
    for note in parsed.notes:
        print(f"Note: {note}")
    if parsed.skipped:
        print(f"Skipped {len(parsed.skipped)} bad lines/items:")
        for line in parsed.skipped:
            print(f"  {line}")
    return 0


def cmd_search(args) -> int:
    if not args.query and not args.batch:
        raise UserError("search needs a QUERY or --batch FILE", "e.g. mneme search 'tax form'")
    with _open(args, create=False) as mem:
        _wait_index(mem)
        if args.batch:
            for item in _read_batch(Path(args.batch), "query"):
                result = mem.search(item["query"], item.get("limit", args.limit), mode=args.mode,
                                    app=item.get("app"), since=_date(item.get("since")),
                                    until=_date(item.get("until")))
                print(json.dumps({"query": item["query"], "hits": [h.as_json() for h in result.hits]},
                                 ensure_ascii=False))
            return 0
        result = mem.search(args.query, args.limit, mode=args.mode, **_filters(args))
        if args.json:
            print(json.dumps([h.as_json() for h in result.hits], ensure_ascii=False))
            return 0
        if not result.hits:
            print("Nothing found.")
        for n, hit in enumerate(result.hits, 1):
            _print_hit(n, hit)
    return 0


def _print_citations(answer) -> None:
    if not answer.citations:
        return
    print("\nSources:")
    for c in answer.citations:
        when = datetime.fromtimestamp(c.time).astimezone().strftime("%Y-%m-%d %H:%M")
        print(f"  [{c.n}] {when}  {' · '.join(p for p in (c.app, c.title) if p)}"
              f"{'  ' + c.speaker if c.speaker else ''}")
        if c.quote:
            print(f"      “{c.quote}”")


def _read_batch(path: Path, key: str) -> list[dict]:
    """One JSON object with *key* a line; a bad line is refused with its number before any work."""
    items = []
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read {path}: {exc}", "give a UTF-8 JSONL file") from None
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            if not isinstance(item, dict) or not isinstance(item[key], str):
                raise TypeError
        except (json.JSONDecodeError, KeyError, TypeError):
            raise UserError(f"{path.name}:{lineno}: expected {{\"{key}\": \"...\"}}",
                            "one JSON object a line; nothing was run") from None
        items.append(item)
    return items


def cmd_ask(args) -> int:
    from mneme.core.assistant import Assistant

    if not args.question and not args.batch:
        raise UserError("ask needs a QUESTION or --batch FILE", "e.g. mneme ask 'when is the dentist?'")
    batch = _read_batch(Path(args.batch), "question") if args.batch else None
    with _open(args, create=False) as mem:
        llm = _load_llm(mem, args.model)
        try:
            _wait_index(mem)
            assistant = Assistant(mem, llm, max_answer_tokens=mem.config["max_answer_tokens"])
            if batch is not None:
                bar = _progress("answering", total=len(batch), unit="question")
                for item in batch:
                    answer = assistant.ask(item["question"], remember=not args.no_history,
                                           since=_date(item.get("since")), until=_date(item.get("until")),
                                           app=item.get("app"))
                    print(json.dumps(answer.as_json(), ensure_ascii=False), flush=True)
                    bar.update(1)
                bar.close()
                return 0
            stream = None if args.json else (lambda t: (sys.stdout.write(t), sys.stdout.flush()))
            answer = assistant.ask(args.question, on_token=stream, remember=not args.no_history,
                                   **_filters(args))
        finally:
            llm.close()
        if args.json:
            print(json.dumps(answer.as_json(), ensure_ascii=False))
        else:
            print()
            _print_citations(answer)
    return 0


def cmd_chat(args) -> int:
    from mneme.core.assistant import Assistant

    with _open(args) as mem:
        llm = _load_llm(mem, args.model)
        try:
            assistant = Assistant(mem, llm, max_answer_tokens=mem.config["max_answer_tokens"])
            print(f"Mneme — ask your memory ({mem.status()['sources']} items). Ctrl-D to leave.")
            while True:
                try:
                    question = input("\nyou> ").strip()
                except EOFError:
                    print()
                    return 0
                if not question:
                    continue
                _wait_index(mem)
                cancel = threading.Event()
                sys.stdout.write("mneme> ")
                try:
                    answer = assistant.ask(question, cancel=cancel,
                                           on_token=lambda t: (sys.stdout.write(t), sys.stdout.flush()))
                except KeyboardInterrupt:
                    cancel.set()
                    print("\n(stopped)")
                    continue
                print()
                _print_citations(answer)
        finally:
            llm.close()


def cmd_status(args) -> int:
    with _open(args, create=False, warm=False) as mem:
        status = mem.status()
    from mneme.models.registry import describe_memory, memory_report

    llm_memory = memory_report(mem.config)
    if args.json:
        print(json.dumps(dict(status, llm_memory=llm_memory)))
        return 0
    print(f"Memory:   {status['home']} ({status['key_mode']} mode)")
    print(f"Items:    {status['sources']} sources, {status['chunks']} text chunks, "
          f"{status['embedded']} embedded ({status['embedder']})")
    if status["first"]:
        print(f"Covers:   {iso(status['first'])} … {iso(status['last'])}")
    print(f"On disk:  {status['store_bytes'] / 1e6:.1f} MB (encrypted); screen frames: "
          f"{status['frames']} using {status['frame_bytes'] / 1e6:.1f} MB "
          f"(kept {status['retention']['days'] or 'forever'} days / {status['retention']['gb'] or 'no'} GB)")
    index = status["index"]
    where = {"ram": "in RAM, saved as an encrypted snapshot", "memory": "in RAM only (no RAM-backed "
             "folder here: rebuilt at each unlock)", "server": "on a Chroma server"}.get(index["place"], "none")
    if index["ready"]:
        held = ("graph let go while idle (opened again by the next search)" if index.get("released")
                else f"about {index['resident_bytes'] / 1e6:.0f} MB in memory")
        print(f"Index:    {index['vectors']} vectors {where}; {held}, "
              f"{index['ram_folder_bytes'] / 1e6:.0f} MB RAM folder; process "
              f"{index['process_rss_bytes'] / 1e6:.0f} MB resident")
    else:
        print(f"Index:    {where}; snapshot of {index['snapshot_vectors']} vectors "
              f"({index['snapshot_bytes'] / 1e6:.1f} MB, encrypted)" + (
                  f", about {index['snapshot_resident_bytes'] / 1e6:.0f} MB in memory when loaded"
                  if index.get("snapshot_resident_bytes") else ""))
    from mneme.core.pause import PauseState

    until = PauseState(mem.home).paused_until()
    print("Capture:  " + ("running when started" if until is None else "paused" + (
        f" until {datetime.fromtimestamp(until):%H:%M}" if until != float("inf") else "")))
    print(f"Model:    {describe_memory(llm_memory)}")
    return 0


def _describe_forget(preview: dict, app: str | None) -> None:
    """What a forget is about to delete: how much, and from which apps and conversations."""
    frames = f", {preview['frames']} screen frames" if preview["frames"] else ""
    print(f"This deletes {preview['sources']} items ({preview['chunks']} text chunks{frames}) from:")
    for g in preview["groups"][:15]:
        where = " · ".join(p for p in (g["app"], g["conversation"]) if p) or "(no app)"
        print(f"  {g['sources']:>7}  {where}")
    if len(preview["groups"]) > 15:
        print(f"  … and {len(preview['groups']) - 15} more apps or conversations")


def cmd_forget(args) -> int:
    filters = _filters(args)
    if not any(v is not None for v in filters.values()):
        raise UserError("forget needs --since, --until or --app", "e.g. mneme forget --app Slack")
    with _open(args, create=False) as mem:
        preview = mem.forget_preview(**filters)
        if not preview["sources"]:
            similar = f" (names like it: {', '.join(preview['similar'])})" if preview["similar"] else ""
            print(f"Nothing matches, so nothing was deleted{similar}." +
                  ("\n--app takes the exact app or conversation name." if args.app else ""))
            return 0
        _describe_forget(preview, args.app)
        if not args.yes:
            if not sys.stdin.isatty():
                raise UserError("forgetting needs a confirmation and there is no terminal to ask on",
                                "check what is listed above, then pass --yes")
            if input("Delete these for good? [y/N] ").strip().lower() != "y":
                print("Nothing deleted.")
                return 1
        _wait_index(mem)
        n = mem.forget(**filters)
    print(f"Forgot {preview['sources']} items, {n} text chunks (deleted from the store and the index).")
    return 0


def cmd_doctor(args) -> int:
    with _open(args, create=False, warm=False) as mem:
        mem.warm(background=True, catch_up=not args.check)  # --check embeds nothing
        _wait_index(mem)
        problems = mem.doctor(repair=not args.check, backlog=False)
        backlog = mem.backlog()
        if problems and not args.check:
            remaining = mem.doctor(repair=False)
            for p in problems:
                print(f"repaired: {p}")
            for p in remaining:
                print(f"still wrong: {p}")
            return 1 if remaining else 0
    for p in problems:
        print(f"problem: {p}")
    if backlog:
        print(f"note: {backlog} text chunks are waiting to be embedded (done in the background, "
              "or now by `mneme doctor`)")
    if not problems:
        print("Memory is consistent: store, keyword index and vector index agree.")
    from mneme.models.registry import describe_memory, memory_report

    llm_memory = memory_report(mem.config)
    refused = bool(llm_memory.get("refused"))
    print(("problem: " if refused else "model: ") + describe_memory(llm_memory))
    return 1 if problems or refused else 0


def cmd_unlock(args) -> int:
    with _open(args, create=False, warm=False, embedder=False) as mem:
        print(f"The key opens {mem.home} ({mem.meta.mode} mode).")
    return 0


def cmd_lock(args) -> int:
    print("The command line holds no key between commands: the memory is locked whenever no "
          "Mneme command or app is running.")
    return 0


def cmd_key(args) -> int:
    with _open(args, create=False, warm=False, embedder=False) as mem:
        mem.change_key_mode(args.mode, _prompt_new)
        print(f"Re-encrypted {mem.home}; it now uses {args.mode} mode.")
    return 0


def cmd_config(args) -> int:
    from mneme.core.config import SETTINGS, Config

    layout = HomeLayout(resolve_home(args.home))
    config = Config.load(layout.config)
    if args.name and args.value is not None:
        layout.create()
        config.set_from_text(args.name, args.value)
        config.save()
    for s in SETTINGS:
        if not args.name or s.name == args.name:
            print(f"{s.name} = {json.dumps(config[s.name])}    # {s.description}")
    return 0


def _vault_passphrase(new: bool) -> str:
    return _ask_secret("Vault passphrase: ", "MNEME_VAULT_PASSPHRASE", "a vault passphrase", twice=new)


def cmd_export(args) -> int:
    from mneme.core.vault import export_vault

    passphrase = _vault_passphrase(new=True)
    with _open(args, create=False, warm=False, embedder=False) as mem:
        bar = _progress("exporting", total=mem.store.counts("")["sources"], unit="item")
        info = export_vault(mem, args.file, passphrase, progress=lambda d, t: bar.update(d - bar.n))
        bar.close()
    print(f"Wrote {info['sources']} items to {args.file} ({info['bytes'] / 1e6:.1f} MB, encrypted).")
    return 0


def cmd_import_vault(args) -> int:
    from mneme.core.vault import import_vault

    passphrase = _vault_passphrase(new=False)
    with _open(args) as mem:
        bar = _progress("importing vault", total=Path(args.file).stat().st_size if Path(args.file).exists()
                        else None, unit="B")
        info = import_vault(mem, args.file, passphrase, progress=lambda d, t: bar.update(d - bar.n))
        bar.close()
    print(f"Imported {info['added']} items from {args.file}; {info['duplicates']} were already in memory.")
    if info["bad_vectors"]:
        print(f"Left out {info['bad_vectors']} malformed vectors (wrong size or not finite); "
              "their text was embedded again.")
    return 0


def cmd_capture(args) -> int:
    from mneme.capture import ocr
    from mneme.capture.screen import Screen
    from mneme.capture.service import CaptureService
    from mneme.capture.window import desktop, session_warning

    if ocr.available() is None:
        raise UserError("tesseract is not installed, so screen text cannot be read",
                        "install it: sudo apt-get install tesseract-ocr (or run `make run`)")
    if warning := session_warning():
        print(f"note: {warning}", file=sys.stderr)
    try:
        desk = desktop()
    except Exception as exc:  # no display, no X server
        raise UserError(f"cannot reach the display ({exc})", "run inside a desktop session "
                        "(DISPLAY must be set)") from None
    with _open(args) as mem:
        mem.embedder.embed(["capture starts"])  # made now, not on the capture thread mid-frame
        service = CaptureService(mem, lambda: desk, Screen, interval=args.interval)
        if args.once:
            service.once()
        else:
            service.start()  # retention runs at start and hourly while capturing
            print(f"Capturing every {service.pipeline.interval:g} s into {mem.home}. Ctrl-C stops.",
                  file=sys.stderr)
            signal.signal(signal.SIGTERM, _interrupt)  # a session manager's or `kill`'s stop is a Ctrl-C too
            try:
                while service.state == "running":
                    service.join(0.5)
            except KeyboardInterrupt:
                print("\nstopping: finishing queued frames…", file=sys.stderr)
            service.stop()
        mem.wait_caught_up()
        pipeline = service.pipeline
        service.close()
        if service.error:
            raise UserError(f"capture stopped because of an error ({service.error})",
                            f"details are in {mem.layout.logs}/mneme.log; run `mneme capture` again to restart")
    stats = pipeline.stats.as_json()
    print(json.dumps(stats) if args.json else
          f"Stored {stats['frames_stored']} frames ({stats['unchanged']} unchanged skipped, "
          f"{stats['deferred']} deferred, skipped: {stats['skipped'] or 'none'}).")
    return 0


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def cmd_pause(args) -> int:
    from mneme.core.pause import PauseState, parse_duration

    home = resolve_home(args.home)
    if not home.exists():
        raise UserError(f"there is no memory in {home} yet", "run `mneme init` first")
    until = PauseState(home).pause(parse_duration(args.duration) if args.duration else None)
    print("Capture paused" + (f" until {datetime.fromtimestamp(until):%H:%M}." if until != float("inf")
                              else " until `mneme resume`."))
    return 0


def cmd_resume(args) -> int:
    from mneme.core.pause import PauseState

    PauseState(resolve_home(args.home)).resume()
    print("Capture resumed.")
    return 0


def cmd_app(args) -> int:
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise UserError("there is no display to show the app on", "use `mneme chat` in a terminal, "
                        "or start Mneme from your desktop session")
    from mneme.app.main import run

    return run(args.home)


def cmd_setup_model(args) -> int:
    from mneme.models.registry import default_model_path

    print(default_model_path(progress=print))
    return 0


# -- parser -------------------------------------------------------------------------------------
def _add_filters(p) -> None:
    p.add_argument("--since", help="from this date/time (e.g. 2024-03-05)")
    p.add_argument("--until", help="before this date/time")
    p.add_argument("--app", help="only this app or conversation (e.g. Slack); for forget, the exact name")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mneme", description="Your private, encrypted second memory.")
    parser.add_argument("--home", help="memory folder (default: $MNEME_HOME or the platform's data dir)")
    parser.add_argument("--verbose", action="store_true", help="debug logging (to the log file)")
    parser.add_argument("--version", action="version", version=f"mneme {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("init", help="create an encrypted memory")
    p.add_argument("--passphrase", action="store_true", help="derive the key from a passphrase "
                   "instead of keeping it in the OS keyring")
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("import", help="import into memory")
    isub = p.add_subparsers(dest="what", metavar="WHAT", required=True)
    c = isub.add_parser("chats", help="chat history: JSONL, ChatGPT conversations.json, WhatsApp .txt")
    c.add_argument("file")
    c.add_argument("--format", default="auto", choices=["auto", "jsonl", "chatgpt", "whatsapp"])
    c.add_argument("--skip-bad", action="store_true", help="import the good part, list what was skipped")
    c.set_defaults(func=cmd_import_chats)

    c = isub.add_parser("vault", help="a vault made by `mneme export` (restores or merges)")
    c.add_argument("file")
    c.set_defaults(func=cmd_import_vault)

    p = sub.add_parser("export", help="write the whole memory to one encrypted vault file")
    p.add_argument("file")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("search", help="search memory (keywords + meaning)")
    p.add_argument("query", nargs="?")
    p.add_argument("--limit", type=int, default=10)
    p.add_argument("--json", action="store_true")
    p.add_argument("--batch", help='JSONL file, one {"query": ...} a line; prints one result line each')
    p.add_argument("--mode", default="hybrid", choices=["hybrid", "keyword", "vector"])
    _add_filters(p)
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("ask", help="ask a question; answered on this machine, with citations")
    p.add_argument("question", nargs="?")
    p.add_argument("--json", action="store_true")
    p.add_argument("--batch", help='JSONL file, one {"question": ...} a line; one JSON answer a line')
    p.add_argument("--no-history", action="store_true", help="do not keep these questions in the history")
    p.add_argument("--model", help="a GGUF model file to use instead of the default")
    _add_filters(p)
    p.set_defaults(func=cmd_ask)

    p = sub.add_parser("chat", help="an interactive ask session")
    p.add_argument("--model", help="a GGUF model file")
    p.set_defaults(func=cmd_chat)

    p = sub.add_parser("status", help="what is in memory")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("forget", help="delete a time range or an app's items for good")
    _add_filters(p)
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.set_defaults(func=cmd_forget)

    p = sub.add_parser("doctor", help="check that store and indexes agree, and repair them")
    p.add_argument("--check", action="store_true", help="only report, change nothing")
    p.set_defaults(func=cmd_doctor)

    sub.add_parser("unlock", help="check that the key opens the memory").set_defaults(func=cmd_unlock)
    sub.add_parser("lock", help="lock the memory").set_defaults(func=cmd_lock)
    p = sub.add_parser("key", help="change how the memory is locked (re-encrypts it)")
    p.add_argument("mode", choices=["keyring", "passphrase"])
    p.set_defaults(func=cmd_key)

    p = sub.add_parser("config", help="show or change settings")
    p.add_argument("name", nargs="?")
    p.add_argument("value", nargs="?")
    p.set_defaults(func=cmd_config)

    p = sub.add_parser("capture", help="capture the screen into memory until stopped (Ctrl-C)")
    p.add_argument("--once", action="store_true", help="one pass over every monitor, then exit")
    p.add_argument("--interval", type=float, help="seconds between captures (default: setting)")
    p.add_argument("--json", action="store_true", help="print the capture statistics as JSON")
    p.set_defaults(func=cmd_capture)
    p = sub.add_parser("pause", help="pause capture, for a while (15m, 1h) or until resume")
    p.add_argument("duration", nargs="?")
    p.set_defaults(func=cmd_pause)
    sub.add_parser("resume", help="resume capture").set_defaults(func=cmd_resume)

    sub.add_parser("app", help="the desktop app (tray, recall hotkey, capture)").set_defaults(func=cmd_app)
    sub.add_parser("setup-model", help="prepare the bundled default model").set_defaults(func=cmd_setup_model)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        if os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"):
            args.func, args.command = cmd_app, "app"
        else:
            parser.print_help()
            return 0
    from mneme.app import logs

    if args.func not in (cmd_setup_model, cmd_config, cmd_lock):  # these touch no memory
        logs.setup(HomeLayout(resolve_home(args.home)).logs, args.verbose)
    try:
        return args.func(args)
    except UserError as exc:
        print(f"mneme: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"  hint: {exc.hint}", file=sys.stderr)
        return exc.exit_code if exc.exit_code != 1 else 2
    except KeyboardInterrupt:
        print("\nmneme: interrupted; nothing half-done was kept.", file=sys.stderr)
        return 130
    except Exception:
        log.exception("unexpected error in %s", args.command)
        print(f"mneme: unexpected error (a bug). Details are in {HomeLayout(resolve_home(args.home)).logs}"
              "/mneme.log", file=sys.stderr)
        return 70
