"""The master key: random and kept in the OS keyring, or derived from a passphrase (never stored).

The home's ``mneme.json`` says which mode is in use and holds the KDF salt and parameters:
nothing secret. ``MNEME_PASSPHRASE`` unlocks non-interactively.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from argon2.low_level import Type, hash_secret_raw

from mneme.core.errors import LockedError, UserError
from mneme.core.paths import HomeLayout, fsync_dir, write_atomic

log = logging.getLogger(__name__)
KEYRING_SERVICE = "mneme"
FORMAT = 1
# Argon2id, RFC 9106 "second recommended" profile scaled for a desktop unlock (~0.2 s here).
DEFAULT_KDF = {"name": "argon2id", "time_cost": 3, "memory_kib": 65536, "parallelism": 1}

PassphraseSource = Callable[[str], str]


@dataclass
class KeyMeta:
    mode: str  # "keyring" | "passphrase"
    keyring_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    salt: str = field(default_factory=lambda: secrets.token_hex(16))
    kdf: dict = field(default_factory=lambda: dict(DEFAULT_KDF))
    retired: str = ""  # keyring id of a master key replaced by this one, to be removed

    @classmethod
    def load(cls, path: Path) -> "KeyMeta | None":
        if not path.exists():
            return None
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            if raw.get("format", 0) > FORMAT:
                raise UserError(f"{path} was written by a newer Mneme", "update Mneme")
            return cls(mode=raw["mode"], keyring_id=raw["keyring_id"], salt=raw["salt"], kdf=raw["kdf"],
                       retired=str(raw.get("retired", "")))
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise UserError(f"{path} is damaged ({exc})",
                            "restore it from a backup; without it the memory cannot be unlocked") from None

    def save(self, path: Path) -> None:
        raw = {"format": FORMAT, "mode": self.mode, "keyring_id": self.keyring_id, "salt": self.salt,
               "kdf": self.kdf, **({"retired": self.retired} if self.retired else {})}
        write_atomic(path, json.dumps(raw, indent=2))


# What Argon2id parameters a file may ask for: past these a forged header could make the
# derivation fail with a traceback, need absurd memory, or run for ever.
KDF_BOUNDS = {"time_cost": (1, 16), "memory_kib": (8, 1 << 20), "parallelism": (1, 16)}
SALT_BYTES = (16, 64)


def kdf_problem(kdf, salt: bytes) -> str | None:
    """Why these key-derivation parameters must not be used; None when they are sane."""
    if not isinstance(kdf, dict) or kdf.get("name") != "argon2id":
        return "unknown key derivation"
    for name, (lo, hi) in KDF_BOUNDS.items():
        value = kdf.get(name)
        if type(value) is not int or not lo <= value <= hi:
            return f"KDF parameter {name} = {value!r} is outside {lo}..{hi}"
    if kdf["memory_kib"] < 8 * kdf["parallelism"]:
        return "KDF memory is less than 8 KiB per lane"
    if not SALT_BYTES[0] <= len(salt) <= SALT_BYTES[1]:
        return f"the KDF salt is {len(salt)} bytes (needs {SALT_BYTES[0]}..{SALT_BYTES[1]})"
    return None


def subkey(master: bytes, salt: bytes, purpose: bytes) -> bytes:
    """A 256-bit key for one purpose (HKDF-SHA256 of the master key), so that a file sealed with
    it is tied to this memory's key and follows it through a key change or a vault import."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=purpose).derive(master)


def derive_key(passphrase: str, salt: bytes, kdf: dict) -> bytes:
    if kdf.get("name") != "argon2id":
        raise UserError(f"unknown key derivation {kdf.get('name')!r}", "update Mneme")
    if problem := kdf_problem(kdf, salt):
        raise UserError(f"the key metadata is damaged: {problem}", "restore mneme.json from a backup")
    if not passphrase:
        raise LockedError("an empty passphrase is not allowed", "choose a passphrase")
    return hash_secret_raw(passphrase.encode("utf-8"), salt, time_cost=int(kdf["time_cost"]),
                           memory_cost=int(kdf["memory_kib"]), parallelism=int(kdf["parallelism"]),
                           hash_len=32, type=Type.ID)


NO_KEYRING_HINT = ("no OS keyring is available here (no Secret Service / KWallet / Keychain). "
                   "Use passphrase mode instead: `mneme init --passphrase`, or set MNEME_PASSPHRASE")


INSECURE_BACKENDS = ("keyrings.alt", "keyring.backends.fail", "keyring.backends.null",
                     "keyring.backends.chainer")


def _keyring():
    """The OS keyring backend to use, and keyring's error module.

    Backends that keep secrets in a plain file next to the data (keyrings.alt) would defeat the
    encryption, so they are only used when PYTHON_KEYRING_BACKEND names one explicitly (tests).
    """
    import keyring.backend
    import keyring.core
    import keyring.errors

    if os.environ.get("PYTHON_KEYRING_BACKEND"):
        return keyring.core.load_keyring(os.environ["PYTHON_KEYRING_BACKEND"]), keyring.errors
    for backend in sorted(keyring.backend.get_all_keyring(), key=lambda b: b.priority, reverse=True):
        if backend.priority > 0 and not type(backend).__module__.startswith(INSECURE_BACKENDS):
            return backend, keyring.errors
    return None, keyring.errors


def keyring_available() -> bool:
    return _keyring()[0] is not None


def _keyring_call(cannot: str, refused: str, error: type[UserError], refused_hint: str, call):
    """*call*(keyring), with the keyring's failures said as *error*: none is usable ("cannot
    *cannot*"), or it refuses, locked or denied ("refused to *refused*")."""
    keyring, errors = _keyring()
    try:
        if keyring is None:
            raise errors.NoKeyringError()
        return call(keyring)
    except errors.NoKeyringError:
        raise error(f"cannot {cannot}: " + NO_KEYRING_HINT.split(". ")[0],
                    NO_KEYRING_HINT.split(". ", 1)[1]) from None
    except errors.KeyringError as exc:
        raise error(f"the OS keyring refused to {refused} ({exc})", refused_hint) from None


def _keyring_get(meta: KeyMeta) -> bytes | None:
    value = _keyring_call("read the master key", "give the master key", LockedError,
                          "unlock your keyring (log in to the desktop session) and try again",
                          lambda k: k.get_password(KEYRING_SERVICE, f"master-key:{meta.keyring_id}"))
    return bytes.fromhex(value) if value else None


def _keyring_set(meta: KeyMeta, key: bytes) -> None:
    _keyring_call("store a master key", "store the master key", UserError,
                  "unlock your keyring, or use `mneme init --passphrase`", lambda k: k.set_password(KEYRING_SERVICE, f"master-key:{meta.keyring_id}", key.hex()))


def keyring_delete(meta: KeyMeta) -> None:
    """Remove this memory's master key from the OS keyring. Gone already is fine; a keyring that
    refuses, or keeps the key, is said, never ignored (the old key would stay usable)."""
    keyring, errors = _keyring()
    name = f"master-key:{meta.keyring_id}"
    if keyring is None:
        return
    try:
        keyring.delete_password(KEYRING_SERVICE, name)
    except errors.PasswordDeleteError:
        pass  # not there; checked below
    except errors.KeyringError as exc:
        raise UserError(f"the OS keyring refused to remove the old master key ({exc})",
                        f"remove the entry '{KEYRING_SERVICE} / {name}' with your keyring manager") from None
    try:
        left = keyring.get_password(KEYRING_SERVICE, name)
    except errors.KeyringError as exc:
        raise UserError(f"cannot check that the old master key left the OS keyring ({exc})",
                        f"remove the entry '{KEYRING_SERVICE} / {name}' with your keyring manager") from None
    if left:
        raise UserError("the old master key is still in the OS keyring",
                        f"remove the entry '{KEYRING_SERVICE} / {name}' with your keyring manager")


def env_or_prompt(prompt: PassphraseSource | None) -> PassphraseSource:
    """A passphrase from *prompt* when one is given (a dialog, a terminal prompt), else from
    MNEME_PASSPHRASE (automation)."""

    def get(question: str) -> str:
        if prompt is not None:
            return prompt(question)
        if os.environ.get("MNEME_PASSPHRASE"):
            return os.environ["MNEME_PASSPHRASE"]
        raise LockedError("the memory is locked with a passphrase and none was given",
                          "set MNEME_PASSPHRASE or run interactively")

    return get


def create_key(meta_path: Path, mode: str, passphrase: PassphraseSource | None) -> tuple[KeyMeta, bytes]:
    """Make the key for a new memory and record how to get it back."""
    meta = KeyMeta(mode=mode)
    key = _make_key(meta, passphrase)
    meta.save(meta_path)
    return meta, key


def _make_key(meta: KeyMeta, passphrase: PassphraseSource | None) -> bytes:
    """A new key for *meta*: random and kept in the keyring, or derived from a new passphrase."""
    if meta.mode == "keyring":
        key = secrets.token_bytes(32)
        _keyring_set(meta, key)
        return key
    if meta.mode == "passphrase":
        return derive_key(env_or_prompt(passphrase)("New passphrase: "), bytes.fromhex(meta.salt), meta.kdf)
    raise UserError(f"unknown key mode {meta.mode!r}", "use 'keyring' or 'passphrase'")


def load_key(meta: KeyMeta, passphrase: PassphraseSource | None) -> bytes:
    if meta.mode == "keyring":
        key = _keyring_get(meta)
        if key is None:
            raise LockedError("the master key for this memory is not in the OS keyring",
                              "it may have been created under another user or keyring; "
                              "restore the keyring or import a vault into a new home")
        return key
    return derive_key(env_or_prompt(passphrase)("Passphrase: "), bytes.fromhex(meta.salt), meta.kdf)


# -- changing the key, crash-safely ---------------------------------------------------------------
# 1. the new key's metadata is written and synced beside the old (mneme.json.next);
# 2. the store is re-encrypted (one SQLite transaction: a crash rolls it back);
# 3. mneme.json.next replaces mneme.json; 4. the old keyring entry, named in the new metadata
#    as ``retired``, is removed and the name cleared.
# At every point one of the two files opens the store; ``memory._unlock`` finishes or undoes
# what a crash interrupted, at the next unlock.

def new_key(mode: str, passphrase: PassphraseSource | None, old: KeyMeta) -> tuple[KeyMeta, bytes]:
    meta = KeyMeta(mode=mode, retired=old.keyring_id if old.mode == "keyring" else old.retired)
    return meta, _make_key(meta, passphrase)


def save_pending(layout: HomeLayout, meta: KeyMeta) -> None:
    meta.save(layout.meta_next)


def promote_pending(layout: HomeLayout) -> None:
    os.replace(layout.meta_next, layout.meta)
    fsync_dir(layout.root)


def finish_change(layout: HomeLayout, new: KeyMeta) -> None:
    """Steps 3 and 4, once the store opens with the new key."""
    promote_pending(layout)
    retire_old_key(layout, new)


def retire_old_key(layout: HomeLayout, meta: KeyMeta) -> None:
    """Remove the master key *meta* replaced from the keyring (raises UserError if it refuses)."""
    if meta.retired:
        keyring_delete(KeyMeta(mode="keyring", keyring_id=meta.retired))
        meta.retired = ""
        meta.save(layout.meta)


def drop_pending(layout: HomeLayout) -> None:
    """The store still opens with the old key: the change never happened; forget the new one."""
    pending = KeyMeta.load(layout.meta_next)
    if pending is not None and pending.mode == "keyring":
        try:
            keyring_delete(pending)
        except UserError as exc:  # an unused key; the memory opens all the same
            log.error("a key made for an interrupted key change stays in the keyring: %s", exc.message)
    layout.meta_next.unlink(missing_ok=True)
    fsync_dir(layout.root)


def remembering(source: PassphraseSource | None) -> PassphraseSource:
    """A passphrase source that asks once: the same answer may be tried on the old and new key."""
    answers: dict[str, str] = {}
    get = env_or_prompt(source)

    def ask(question: str) -> str:
        if "answer" not in answers:
            answers["answer"] = get(question)
        return answers["answer"]

    return ask
