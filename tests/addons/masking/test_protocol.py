"""The framing the gateway and its analyzer workers share: one encoder, one decoder, read blocking or from asyncio."""

from __future__ import annotations

import asyncio
import io

import pytest

from addons.masking import protocol
from addons.masking.protocol import HEADER, ProtocolError, Unit

MESSAGE = (7, [Unit("Jane Doe wrote from jane@example.com", ner=False), Unit("Ana Lee", patterns=False)])
FRAME = protocol.encode(MESSAGE)


class Trickle(io.RawIOBase):
    """A pipe that hands out one byte per read, as a pipe may."""

    def __init__(self, data: bytes) -> None:
        self.data = io.BytesIO(data)

    def read(self, size: int = -1) -> bytes:
        return self.data.read(min(size, 1))


def receive_async(data: bytes) -> object:
    async def read() -> object:
        reader = asyncio.StreamReader()
        reader.feed_data(data)
        reader.feed_eof()
        return await protocol.receive_async(reader)

    return asyncio.run(read())


def test_a_message_survives_the_round_trip_on_either_side() -> None:
    assert protocol.body_size(FRAME[:HEADER.size]) == len(FRAME) - HEADER.size
    assert protocol.receive(io.BytesIO(FRAME)) == MESSAGE
    assert protocol.receive(Trickle(FRAME)) == MESSAGE
    assert receive_async(FRAME) == MESSAGE
    pipe = io.BytesIO()
    protocol.send(pipe, MESSAGE)
    protocol.send(pipe, (None, True, 4242))
    pipe.seek(0)
    assert [protocol.receive(pipe), protocol.receive(pipe)] == [MESSAGE, (None, True, 4242)]


@pytest.mark.parametrize("cut", [0, 2, HEADER.size, len(FRAME) - 1])
def test_a_truncated_message_is_a_protocol_error(cut: int) -> None:
    with pytest.raises(ProtocolError, match=f"closed after {cut if cut < HEADER.size else cut - HEADER.size} of"):
        protocol.receive(io.BytesIO(FRAME[:cut]))
    with pytest.raises(ProtocolError):
        receive_async(FRAME[:cut])


def test_an_unreadable_message_is_a_protocol_error() -> None:
    garbage = HEADER.pack(3) + b"abc"
    with pytest.raises(ProtocolError, match="unreadable"):
        protocol.receive(io.BytesIO(garbage))
    with pytest.raises(ProtocolError, match="unreadable"):
        receive_async(garbage)
