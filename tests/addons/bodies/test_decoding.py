"""The bounded decoder: every accepted coding round-trips, cut anywhere; bombs stop at the bound."""

from __future__ import annotations

import asyncio
import gzip
import os
import zlib

import brotli
import pytest
import zstandard

from addons.bodies.decoding import (
    MAX_RATIO,
    RATIO_FLOOR,
    STREAM_FEED_LIMIT,
    CorruptBody,
    DecodedTooLarge,
    Decoder,
    UnsupportedCoding,
    coding_of,
    decode,
)

BODY = (b'{"messages": [{"role": "user", "content": "hello there"}]}' * 2000) + os.urandom(3000).hex().encode()


def encode(body: bytes, coding: str) -> bytes:
    if coding == "gzip":
        return gzip.compress(body)
    if coding == "deflate":
        return zlib.compress(body)
    if coding == "raw-deflate":
        c = zlib.compressobj(wbits=-zlib.MAX_WBITS)
        return c.compress(body) + c.flush()
    if coding == "br":
        return brotli.compress(body)
    return zstandard.ZstdCompressor().compress(body)


@pytest.mark.parametrize("coding", ["gzip", "deflate", "raw-deflate", "br", "zstd"])
@pytest.mark.parametrize("cut", [1, 7, 4096, 10**9])
def test_each_coding_round_trips_in_any_pieces(coding: str, cut: int) -> None:
    encoded = encode(BODY, coding)
    decoder = Decoder(coding.removeprefix("raw-"), limit=10 * len(BODY))
    out = b"".join(decoder.feed(encoded[i:i + cut]) for i in range(0, len(encoded), cut)) + decoder.finish()
    assert out == BODY


def test_several_gzip_members_and_zstd_frames_are_one_body() -> None:
    assert asyncio.run(decode(gzip.compress(b"ab") + gzip.compress(b"cd"), "gzip", 100)) == b"abcd"
    c = zstandard.ZstdCompressor()
    assert asyncio.run(decode(c.compress(b"ab") + c.compress(b"cd"), "zstd", 100)) == b"abcd"


def test_only_the_accepted_codings_one_at_a_time() -> None:
    assert coding_of(None) is None and coding_of("") is None and coding_of(" Identity ") is None
    assert coding_of("GZIP") == "gzip" and coding_of("br") == "br"
    for header in ("bz2", "base64", "compress", "x-gzip", "gzip, br", "rot13"):
        with pytest.raises(UnsupportedCoding) as e:
            coding_of(header)
        assert "gzip, deflate, br, zstd, identity" in str(e.value)


@pytest.mark.parametrize("coding", ["gzip", "deflate", "br", "zstd"])
def test_corrupt_and_truncated_bodies(coding: str) -> None:
    encoded = encode(BODY, coding)
    with pytest.raises(CorruptBody):
        asyncio.run(decode(b"\x1f\x8b not really" if coding == "gzip" else b"garbage" * 10, coding, 10**7))
    with pytest.raises(CorruptBody):
        asyncio.run(decode(encoded[: len(encoded) // 2], coding, 10**7))


def _bomb(coding: str, size: int) -> bytes:
    """``size`` zero bytes, compressed as they are made (never held whole)."""
    chunk = bytes(1 << 20)
    if coding == "br":
        c = brotli.Compressor(quality=5)
        return b"".join(c.process(chunk) for _ in range(size >> 20)) + c.finish()
    if coding == "zstd":
        z = zstandard.ZstdCompressor().compressobj()
        return b"".join(z.compress(chunk) for _ in range(size >> 20)) + z.flush()
    g = zlib.compressobj(9, zlib.DEFLATED, 31)
    return b"".join(g.compress(chunk) for _ in range(size >> 20)) + g.flush()


@pytest.mark.parametrize("coding", ["gzip", "br", "zstd"])
def test_a_bomb_stops_at_the_limit_or_the_ratio(coding: str) -> None:
    bomb = _bomb(coding, 256 << 20)
    with pytest.raises(DecodedTooLarge) as e:
        asyncio.run(decode(bomb, coding, limit=8 << 20))
    assert e.value.decoded <= (8 << 20) + (4 << 20)  # one piece past the bound at most
    # a streamed bomb is caught by its ratio long before the size limit
    decoder = Decoder(coding, limit=1 << 30)
    with pytest.raises(DecodedTooLarge) as e:
        for i in range(0, len(bomb), 512):
            decoder.feed(bomb[i:i + 512])
    assert e.value.by_ratio and e.value.decoded <= max(RATIO_FLOOR, MAX_RATIO * e.value.encoded) + (4 << 20)


def test_small_bodies_decode_whatever_their_ratio() -> None:
    assert asyncio.run(decode(gzip.compress(bytes(RATIO_FLOOR)), "gzip", 10**9)) == bytes(RATIO_FLOOR)


def test_a_zstd_frame_declaring_a_huge_window_is_refused() -> None:
    # window_log 27: the frame asks the decoder for a 128 MiB window (libzstd would allocate up to 2 GiB)
    params = zstandard.ZstdCompressionParameters.from_level(3, window_log=27)
    z = zstandard.ZstdCompressor(compression_params=params).compressobj()
    frame = z.compress(b"tiny") + z.flush()
    assert zstandard.get_frame_parameters(frame).window_size == 1 << 27
    with pytest.raises(CorruptBody, match="memory"):
        Decoder("zstd", limit=10**9).feed(frame)
    with pytest.raises(CorruptBody):
        asyncio.run(decode(frame, "zstd", 10**9))
    # RFC 9659's 8 MiB window, and libzstd's default for level 19, decode
    params = zstandard.ZstdCompressionParameters.from_level(19, window_log=23)
    z = zstandard.ZstdCompressor(compression_params=params).compressobj()
    assert asyncio.run(decode(z.compress(BODY) + z.flush(), "zstd", 10**9)) == BODY


def _credit_then_bomb(coding: str) -> tuple[bytes, bytes]:
    """One stream: 1 MiB that barely compresses (ratio credit), then, as a second chunk, 32 MiB of zeros."""
    credit, zeros = os.urandom(1 << 20), bytes(32 << 20)
    if coding == "br":
        c = brotli.Compressor(quality=5)
        return c.process(credit) + c.flush(), c.process(zeros) + c.finish()
    if coding == "zstd":
        z = zstandard.ZstdCompressor().compressobj()
        return z.compress(credit) + z.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK), z.compress(zeros) + z.flush()
    g = zlib.compressobj(9, zlib.DEFLATED, 31)
    return g.compress(credit) + g.flush(zlib.Z_SYNC_FLUSH), g.compress(zeros) + g.flush()


@pytest.mark.parametrize("coding", ["gzip", "br", "zstd"])
def test_one_chunk_of_a_stream_decodes_to_at_most_the_feed_limit(coding: str) -> None:
    # after 1 MiB of stream the ratio bound allows 1 GiB more: one chunk must not decode that on the event loop
    credit, bomb = _credit_then_bomb(coding)
    assert len(bomb) < 64 * 1024  # one read's worth
    decoder = Decoder(coding, limit=1 << 30, feed_limit=STREAM_FEED_LIMIT)
    assert len(decoder.feed(credit)) == 1 << 20
    with pytest.raises(DecodedTooLarge) as e:
        decoder.feed(bomb)
    assert not isinstance(e.value, CorruptBody)
    assert e.value.decoded - (1 << 20) <= STREAM_FEED_LIMIT + (4 << 20)  # one piece past the bound at most
    assert "in one piece of the stream" in str(e.value)
    # without the per-chunk bound the same chunk decodes whole (what a stream did before)
    unbounded = Decoder(coding, limit=1 << 30)
    unbounded.feed(credit)
    assert len(unbounded.feed(bomb)) == 32 << 20
    # an ordinary stream, chunk by chunk, is untouched
    decoder = Decoder(coding, limit=1 << 30, feed_limit=STREAM_FEED_LIMIT)
    encoded = encode(BODY, coding)
    out = b"".join(decoder.feed(encoded[i:i + 4096]) for i in range(0, len(encoded), 4096)) + decoder.finish()
    assert out == BODY
