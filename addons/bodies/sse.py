"""Server-sent events on the wire: a byte stream cut into events, an event's fields and data, an event written back.

An event ends at a blank line: a line end, then an empty line (``\\n\\n``, ``\\r\\n\\r\\n``, ``\\r\\r``, or the two
mixed); its lines end in LF, CRLF or CR. A line ``name: value`` is a field (one space after the colon dropped);
``data`` lines join with ``\\n``; a line that starts with ``:`` is a comment, kept as a field named ``""``.
``EventSplitter`` cuts a stream that arrives in chunks cut anywhere; ``events`` cuts a whole body.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field

# A line end, then an empty line. A CR after a line end is one whatever follows; it waits for the next byte only to
# keep the LF of a CRLF with the event it ends.
EVENT_END = re.compile(rb"\r\n\r\n|\n\r\n|\n\n|\r\r|(?:\r\n|\n)\r(?=[^\n])")
_LONGEST_END = 4  # bytes an event end and its look-ahead span: where a scan of what was pending resumes
_LINE_END = re.compile(r"\r\n|\n|\r")

Fields = list[tuple[str, str]]


class EventTooLong(ValueError):
    """An event grew past the splitter's limit without ending: a stream that is no SSE, or one meant to exhaust."""


@dataclass
class EventSplitter:
    """Whole events (each with the blank line that ends it) out of chunks; a partial event waits for the next,
    up to ``limit`` bytes (``EventTooLong`` past it; None: no limit, for a body already bounded)."""

    pending: bytearray = field(default_factory=bytearray)
    limit: int | None = None

    def feed(self, data: bytes) -> list[bytes]:
        # Only the tail of what was pending can end an event with the new bytes: an event that arrives in many
        # chunks is read once, not once per chunk.
        resume = max(0, len(self.pending) - _LONGEST_END + 1)
        self.pending += data
        events: list[bytes] = []
        start = 0
        for match in EVENT_END.finditer(self.pending, resume):
            events.append(bytes(self.pending[start:match.end()]))
            start = match.end()
        del self.pending[:start]
        if self.limit is not None and len(self.pending) > self.limit:
            raise EventTooLong(f"an event grew past {self.limit} bytes without ending")
        return events

    def finish(self) -> bytes:
        """What the stream left unterminated at its end (``b""``: nothing)."""
        rest, self.pending = bytes(self.pending), bytearray()
        return rest


def events(body: bytes) -> Iterator[bytes]:
    """The events of a whole stream, the last one even if no blank line ends it."""
    splitter = EventSplitter()
    yield from splitter.feed(body)
    if rest := splitter.finish():
        yield rest


def parse_event(raw: bytes) -> tuple[Fields, str | None]:
    """(fields other than data, in order; the joined data, or None if the event has none) of one event's bytes.

    Bytes that are not UTF-8 survive a ``render_event`` unchanged (decoded with ``surrogateescape``)."""
    fields: Fields = []
    data: list[str] = []
    for line in _LINE_END.split(raw.decode("utf-8", errors="surrogateescape")):
        if not line:
            continue
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if name == "data" and sep:
            data.append(value)
        else:
            fields.append((name, value if sep else ""))
    return fields, ("\n".join(data) if data else None)


def render_event(fields: Fields, data: str | None) -> bytes:
    """One event: ``fields`` as parsed (comments as ``:text``), then ``data`` a line each (none for ``None``),
    then a blank line (LF)."""
    lines = [f"{name}: {value}" if name else f":{value}" for name, value in fields]
    lines += [f"data: {line}" for line in data.split("\n")] if data is not None else []
    return ("\n".join(lines) + "\n\n").encode("utf-8", errors="surrogateescape")
