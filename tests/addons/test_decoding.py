"""The bounded decoder: every accepted coding round-trips, cut anywhere; bombs stop at the bound."""

from __future__ import annotations

import asyncio
import gzip
import os
import zlib

import brotli
import pytest
import zstandard

from addons.decoding import (
    MAX_RATIO,
    RATIO_FLOOR,
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
