"""Small records passed between the store, retrieval and callers."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Message:
    """One chat message on its way in. ``time`` is a UTC epoch."""

    external_id: str
    conversation: str
    time: float
    speaker: str
    text: str
    title: str = ""
    app: str = "chat"
    scope: str = ""  # where external_id is unique: format, app and conversation (see id_scope)


def id_scope(fmt: str, app: str, conversation: str) -> str:
    """Imported ids are unique only within one export's conversation: "1" in a Slack file and "1"
    in a Discord one are different messages. The id itself is kept exactly as given."""
    return f"{fmt}\x1f{app}\x1f{conversation}"


@dataclass(frozen=True)
class Source:
    id: int
    kind: str
    external_id: str
    time: float
    app: str
    conversation: str
    title: str
    speaker: str


@dataclass(frozen=True)
class Chunk:
    id: int
    source_id: int
    text: str
    who: str = ""
    context: str = ""

    @property
    def embed_text(self) -> str:
        """What is embedded: the message it answers, who said it and what was said."""
        text = f"{self.who}: {self.text}" if self.who else self.text
        return f"{self.context} || {text}" if self.context else text


@dataclass
class Hit:
    chunk_id: int
    source_ids: list[int]
    kind: str
    time: float
    app: str
    title: str
    text: str
    score: float
    conversation: str = ""
    speaker: str = ""
    ranks: dict[str, int] = field(default_factory=dict)
    external_id: str = ""     # the id the source was imported or captured with
    similarity: float | None = None  # cosine similarity to the query, where a vector was scored

    def as_json(self) -> dict:
        return {"chunk_id": self.chunk_id, "source_ids": self.source_ids, "kind": self.kind,
                "time": iso(self.time), "app": self.app, "title": self.title, "text": self.text,
                "score": round(self.score, 6), "speaker": self.speaker,
                "conversation": self.conversation,
                "sources": [{"id": sid, "external_id": self.external_id, "kind": self.kind,
                             "speaker": self.speaker, "conversation": self.conversation}
                            for sid in self.source_ids]}


@dataclass(frozen=True)
class FrameIn:
    """A captured, OCR'd, redacted frame on its way into the store."""

    external_id: str
    time: float
    monitor: int
    app: str
    title: str
    width: int
    height: int
    image: bytes
    thumb: bytes
    text: str
    words_json: str
