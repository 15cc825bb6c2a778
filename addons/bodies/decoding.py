"""Bounded Content-Encoding decoding: the only place the gateway decompresses a body.

Accepted codings: ``gzip`` (also several members), ``deflate`` (zlib-wrapped or raw, told apart by
the zlib header), ``br``, ``zstd`` and ``identity``. Anything else (``bz2``, ``base64``, ``compress``,
any other name Python's codecs would have accepted) is ``UnsupportedCoding``. Stacked codings
(``gzip, br``) are refused the same way: no client of an LLM API sends them, and one bound per body is
easier to reason about than one per layer.

Decoding is incremental: output comes in pieces of at most about ``PIECE`` bytes (``zstd``, whose library
takes no output bound, gets its input ``ZSTD_SLICE`` bytes at a time instead), and stops with
``DecodedTooLarge`` as soon as the output passes the caller's limit, or passes ``MAX_RATIO`` times the
encoded bytes read so far once it is over ``RATIO_FLOOR``. So a bomb costs at most the limit (plus one
piece) in memory and the time to produce it, never its full expansion. ``CorruptBody`` is a body that
does not decode as its coding (bad data, truncated, bytes after the end).

``Decoder`` decodes a stream (``feed`` then ``finish``); ``decode`` a whole body, in a worker thread when
it can produce more than ``INLINE_LIMIT`` bytes, so a large body never stalls the event loop. A stream
decoded on the event loop (an encoded SSE answer) passes ``feed_limit``: one ``feed`` never produces more
than that (``FeedTooLarge``), whatever the ratio bound would allow for a large chunk. A zstd frame that
declares a window over ``ZSTD_MAX_WINDOW`` (RFC 9659's limit for the ``zstd`` content coding) is refused
before the decoder allocates it (``CorruptBody``).
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Iterator

import brotli
import zstandard

ACCEPTED = ("gzip", "deflate", "br", "zstd", "identity")
MAX_RATIO = 1000  # decoded bytes per encoded byte; JSON compresses 5-50x, gzip cannot exceed ~1030x
RATIO_FLOOR = 1024 * 1024  # bodies up to this size decode whatever their ratio
PIECE = 64 * 1024
ZSTD_SLICE = 128  # a zstd block expands at most 128 KiB per 4 bytes: at most ~4 MiB per slice
INLINE_LIMIT = RATIO_FLOOR  # bodies that can decode to more go to a worker thread
STREAM_FEED_LIMIT = 8 * 1024 * 1024  # what one chunk of a stream decoded on the event loop may decode to
ZSTD_MAX_WINDOW = 8 * 1024 * 1024  # RFC 9659: encoders of the zstd content coding use at most 8 MiB


class DecodingError(Exception):
    """A body that cannot be decoded within the bounds."""


class UnsupportedCoding(DecodingError):
    """The Content-Encoding is not one of ``ACCEPTED`` (or names more than one coding)."""

    def __init__(self, header: str) -> None:
        self.header = header
        super().__init__(f"Content-Encoding {header!r} is not accepted; use one of {', '.join(ACCEPTED)}")


class DecodedTooLarge(DecodingError):
    """The decoded body passed the size limit or the expansion ratio limit."""

    def __init__(self, coding: str, decoded: int, encoded: int, limit: int, by_ratio: bool) -> None:
        self.coding, self.decoded, self.encoded, self.limit, self.by_ratio = coding, decoded, encoded, limit, by_ratio
        if by_ratio:
            message = (f"{encoded} bytes of {coding} expanded past {decoded} bytes, more than {MAX_RATIO} times "
                       "their size (a decompression bomb)")
        else:
            message = f"the body decodes ({coding}) to more than {limit} bytes"
        super().__init__(message)


class FeedTooLarge(DecodedTooLarge):
    """One chunk of a stream decoded past the per-chunk bound (``feed_limit``)."""

    def __init__(self, coding: str, decoded: int, encoded: int, chunk: int, feed_limit: int) -> None:
        super().__init__(coding, decoded, encoded, feed_limit, by_ratio=True)
        message = (f"{chunk} bytes of {coding} in one piece of the stream decoded to more than {feed_limit} bytes "
                   "(a decompression bomb)")
        self.args = (message,)


class CorruptBody(DecodingError):
    """The body does not decode as the coding it declares."""


def coding_of(header: str | None) -> str | None:
    """The one content coding ``header`` names, lowercased; None for identity (or no header).

    Raises ``UnsupportedCoding`` for any other name and for more than one coding.
    """
    names = [name.strip().lower() for name in (header or "").split(",")]
    names = [name for name in names if name and name != "identity"]
    if not names:
        return None
    if len(names) > 1 or names[0] not in ACCEPTED:
        raise UnsupportedCoding(header or "")
    return names[0]


class _Zlib:
    """gzip (member after member) or deflate (zlib or raw, decided by the first two bytes)."""

    def __init__(self, coding: str) -> None:
        self.gzip = coding == "gzip"
        self.obj: zlib._Decompress | None = zlib.decompressobj(16 + zlib.MAX_WBITS) if self.gzip else None
        self.head = b""  # deflate: bytes held until the zlib header can be checked

    def pieces(self, data: bytes) -> Iterator[bytes]:
        if self.obj is None:
            self.head += data
            if len(self.head) < 2:
                return
            data, self.head = self.head, b""
            zlib_wrapped = data[0] & 0x0F == 8 and (data[0] << 8 | data[1]) % 31 == 0
            self.obj = zlib.decompressobj(zlib.MAX_WBITS if zlib_wrapped else -zlib.MAX_WBITS)
        while True:
            if self.obj.eof:
                if not data:
                    return
                if not self.gzip:
                    raise CorruptBody("bytes after the end of the deflate stream")
                if not data.strip(b"\x00"):
                    return  # gzip allows zero padding after the last member
                self.obj = zlib.decompressobj(16 + zlib.MAX_WBITS)  # another member
            try:
                out = self.obj.decompress(data, PIECE)
            except zlib.error as e:
                raise CorruptBody(str(e)) from None
            if out:
                yield out
            data = self.obj.unused_data if self.obj.eof else self.obj.unconsumed_tail
            if not data and not self.obj.eof and len(out) < PIECE:
                return  # all input read and no output pending (a full piece may have more behind it)

    def finished(self) -> bool:
        return self.obj is not None and self.obj.eof and not self.head


class _Brotli:
    def __init__(self) -> None:
        self.obj = brotli.Decompressor()

    def pieces(self, data: bytes) -> Iterator[bytes]:
        try:
            out = self.obj.process(data, output_buffer_limit=PIECE)
            while out:
                yield out
                out = self.obj.process(b"", output_buffer_limit=PIECE)
        except brotli.error as e:
            raise CorruptBody(str(e) or "not valid br data") from None

    def finished(self) -> bool:
        return self.obj.is_finished()


class _Zstd:
    """zstd, frame after frame."""

    def __init__(self) -> None:
        self.obj = self._frame()

    @staticmethod
    def _frame() -> zstandard.ZstdDecompressionObj:
        # a frame declaring a larger window is refused before its buffer is allocated (up to 2 GiB otherwise)
        return zstandard.ZstdDecompressor(max_window_size=ZSTD_MAX_WINDOW).decompressobj()

    def pieces(self, data: bytes) -> Iterator[bytes]:
        for start in range(0, len(data), ZSTD_SLICE):
            chunk = data[start:start + ZSTD_SLICE]
            while chunk:
                if self.obj.eof:
                    self.obj = self._frame()  # another frame
                try:
                    out = self.obj.decompress(chunk)
                except zstandard.ZstdError as e:
                    raise CorruptBody(str(e)) from None
                if out:
                    yield out
                chunk = self.obj.unused_data if self.obj.eof else b""

    def finished(self) -> bool:
        return self.obj.eof


class Decoder:
    """Decodes one body of ``coding`` piece by piece, never past ``limit`` decoded bytes or ``MAX_RATIO``.

    ``feed(data)`` returns what ``data`` decoded to (maybe nothing yet), never more than ``feed_limit`` bytes
    (``FeedTooLarge``); ``finish()`` checks the body ended where its coding says it ends. Both raise
    ``DecodedTooLarge`` or ``CorruptBody``.
    """

    def __init__(self, coding: str, limit: int, feed_limit: int | None = None) -> None:
        self.coding, self.limit, self.feed_limit = coding, limit, feed_limit
        self.engine = _Brotli() if coding == "br" else _Zstd() if coding == "zstd" else _Zlib(coding)
        self.encoded = 0
        self.decoded = 0

    def feed(self, data: bytes) -> bytes:
        self.encoded += len(data)
        out = []
        produced = 0
        for piece in self.engine.pieces(data):
            self.decoded += len(piece)
            produced += len(piece)
            if self.feed_limit is not None and produced > self.feed_limit:
                raise FeedTooLarge(self.coding, self.decoded, self.encoded, len(data), self.feed_limit)
            if self.decoded > self.limit:
                raise DecodedTooLarge(self.coding, self.decoded, self.encoded, self.limit, by_ratio=False)
            if self.decoded > RATIO_FLOOR and self.decoded > MAX_RATIO * self.encoded:
                raise DecodedTooLarge(self.coding, self.decoded, self.encoded, self.limit, by_ratio=True)
            out.append(piece)
        return b"".join(out)

    def finish(self) -> bytes:
        if self.encoded and not self.engine.finished():
            raise CorruptBody(f"the {self.coding} data ends before its end marker (truncated)")
        return b""


def decode_now(body: bytes, coding: str, limit: int) -> bytes:
    """``body`` decoded from ``coding``, on this thread."""
    decoder = Decoder(coding, limit)
    out = decoder.feed(body)
    decoder.finish()
    return out


async def decode(body: bytes, coding: str, limit: int) -> bytes:
    """``body`` decoded from ``coding`` within ``limit``: in a worker thread if it may decode to more than
    ``INLINE_LIMIT`` bytes, so that a large body or a bomb never stalls the other clients."""
    if not body:
        return b""
    if min(limit, max(RATIO_FLOOR, MAX_RATIO * len(body))) <= INLINE_LIMIT:
        return decode_now(body, coding, limit)
    return await asyncio.to_thread(decode_now, body, coding, limit)
