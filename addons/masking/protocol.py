"""What the gateway and an analyzer worker say to each other over the worker's stdin and stdout.

A message is a 4-byte big-endian length, then the pickled value: both ends are Warden's own processes,
and nothing else writes to these pipes. The gateway (``addons/masking/pool.py``) sends the
``EngineSpec`` first, then requests ``(task_id, units)``; the worker (``addons/masking/worker.py``)
answers once when it has started, ``(None, True, pid)`` or ``(None, False, "what failed")``, then once
per request, ``(task_id, True, spans per unit)`` or ``(task_id, False, "what failed")``.

One encoder (``encode``) and one decoder (``body_size`` then ``decode``) serve both sides; the worker
reads from a blocking pipe (``receive``), the gateway from an asyncio stream (``receive_async``).
"""

from __future__ import annotations

import asyncio
import pickle
import struct
from dataclasses import dataclass
from typing import Any, BinaryIO

Span = tuple[str, int, int, float]  # entity, start, end, score: never the value

HEADER = struct.Struct("!I")  # the length of the pickle that follows


@dataclass(frozen=True)
class Unit:
    """One piece of analysis work: a text and whether to run NER, the pattern recognizers, or both on it."""

    text: str
    ner: bool = True
    patterns: bool = True


Request = tuple[int, list[Unit]]  # one batch: (task id, units)
Answer = tuple[int | None, bool, Any]  # (task id, or None at start-up; succeeded; the result or what failed)


class ProtocolError(Exception):
    """The other end closed the pipe or sent a truncated or unreadable message: the pipe is of no further use."""


def encode(message: object) -> bytes:
    """``message`` as one frame: its length, then its pickle."""
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return HEADER.pack(len(data)) + data


def body_size(header: bytes) -> int:
    """The length a frame's ``HEADER.size``-byte header announces."""
    (size,) = HEADER.unpack(header)
    return size


def decode(body: bytes) -> object:
    """The message in a frame's body; raises ``ProtocolError`` if it is no pickle."""
    try:
        return pickle.loads(body)
    except Exception as e:  # a pickle that cannot be read fails in many ways (UnpicklingError, EOFError, ...)
        raise ProtocolError(f"an unreadable message ({type(e).__name__}: {e})") from e


def send(stream: BinaryIO, message: object) -> None:
    """Write one message to a blocking pipe and flush it."""
    stream.write(encode(message))
    stream.flush()


def _read_exactly(stream: BinaryIO, size: int) -> bytes:
    chunks, left = [], size
    while left:
        chunk = stream.read(left)
        if not chunk:
            raise ProtocolError(f"the pipe closed after {size - left} of {size} bytes")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def receive(stream: BinaryIO) -> object:
    """The next message from a blocking pipe; raises ``ProtocolError`` when the other end is gone."""
    return decode(_read_exactly(stream, body_size(_read_exactly(stream, HEADER.size))))


async def receive_async(reader: asyncio.StreamReader) -> object:
    """The next message from an asyncio stream; raises ``ProtocolError`` when the other end is gone."""
    try:
        header = await reader.readexactly(HEADER.size)
        body = await reader.readexactly(body_size(header))
    except asyncio.IncompleteReadError as e:
        raise ProtocolError(f"the pipe closed after {len(e.partial)} of {e.expected} bytes") from None
    return decode(body)
