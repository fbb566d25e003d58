"""Report views encoded once per generation: JSON (strict) or CSV, identity or gzip.

A JSON view is every byte of the answer but its staleness, which ages by the second; the
staleness goes last, so an answer is the encoded start plus a small tail, and a gzip answer is the
start compressed once (flushed to a byte boundary) plus the tail in a stored block: no request
compresses or serialises the rows again.
"""

from __future__ import annotations

import csv
import io
import json
import struct
import zlib
from dataclasses import dataclass
from typing import Any

# Bodies shorter than this go uncompressed: gzip would save less than its own overhead.
COMPRESS_FROM_BYTES = 1_024
# A gzip member's header: deflate, no name, no time, unknown OS (RFC 1952).
_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"


@dataclass(frozen=True)
class Encoded:
    """One view of one generation, encoded: ``start`` + tail is the whole body."""

    start: bytes
    gzip_start: bytes | None  # header and deflate blocks of ``start``, byte-aligned, not final
    crc: int  # CRC-32 of ``start``

    def body(self, tail: bytes = b"") -> bytes:
        return self.start + tail

    def gzip_body(self, tail: bytes = b"") -> bytes:
        """The gzip member of ``start + tail``: the compressed start, then ``tail`` in a final
        stored block (tails are small), then the checksum and size."""
        assert self.gzip_start is not None
        stored = b"\x01" + struct.pack("<HH", len(tail), 0xFFFF ^ len(tail)) + tail
        size = (len(self.start) + len(tail)) & 0xFFFFFFFF
        return self.gzip_start + stored + struct.pack("<II", zlib.crc32(tail, self.crc), size)


def encoded(start: bytes) -> Encoded:
    gzip_start = None
    if len(start) >= COMPRESS_FROM_BYTES:
        compressor = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
        gzip_start = _GZIP_HEADER + compressor.compress(start) + compressor.flush(zlib.Z_FULL_FLUSH)
    return Encoded(start, gzip_start, zlib.crc32(start))


def json_bytes(value: Any) -> bytes:
    """Strict JSON: a NaN or infinity is an error, never a token other parsers refuse."""
    return json.dumps(value, allow_nan=False, separators=(",", ":")).encode()


def json_view(document: dict[str, Any]) -> Encoded:
    """``document`` without its closing brace, ready for ``,"staleness":{...}}``."""
    return encoded(json_bytes(document)[:-1] + b',"staleness":')


def staleness_tail(staleness: dict[str, Any]) -> bytes:
    return json_bytes(staleness) + b"}"


def csv_view(rows: list[dict[str, Any]]) -> Encoded:
    """The rows as CSV: one line per row, ``detail`` as JSON text."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    columns = ["entity_type", "entity_id", "unused", "usage_count", "last_used", "detail"]
    writer.writerow(columns)
    for row in rows:
        writer.writerow(
            [
                row["entity_type"],
                row["entity_id"],
                "true" if row["unused"] else "false",
                row["usage_count"],
                row["last_used"] or "",
                json.dumps(row["detail"], allow_nan=False, sort_keys=True),
            ]
        )
    return encoded(out.getvalue().encode())
