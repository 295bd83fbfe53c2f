"""Just enough of MySQL's wire protocol to tell whether an answer has arrived.

The async cursor reads an answer on the event loop only when all of it is
already in the socket buffer: reading it is then bounded work that cannot wait
on the server. Anything else (a large or still streaming result, TLS bytes it
cannot read) is read in a worker thread.

An answer to a text-protocol query is an OK packet (0x00), an ERR packet (0xFF),
or a result set: a column count, that many column definitions, an EOF packet
(five bytes, 0xFE) unless the connection deprecated it, rows, and a last 0xFE
packet (EOF, or OK with 0xFE). A packet is a 3-byte little-endian length, a
sequence number, and the payload.
"""

from __future__ import annotations

import struct
from typing import Any

_OK, _ERR, _EOF, _LOCAL_INFILE = 0x00, 0xFF, 0xFE, 0xFB
_EOF_LENGTH = 5  # 0xFE, warnings (2), status (2)
_MAX_PAYLOAD = 0xFFFFFF  # a split packet: far beyond what is read on the loop
_LENGTH_MASK = 0xFFFFFF  # a header read as 4 bytes: the sequence number off
# A packet's header (the 3-byte length and the sequence number, as one
# little-endian int) and its payload's first byte, in one C call: walking the
# rows of a list this way costs a third of indexing the bytes one by one.
_PACKET = struct.Struct("<IB").unpack_from
_WORD = struct.Struct("<H").unpack_from


def _column_count(data: Any, head: int, length: int) -> int | None:
    """The length-encoded integer opening a result set (its first byte
    *head*, in a first packet of *length* bytes)."""
    if head < 0xFB:
        return head
    if head == 0xFC and length >= 3:
        return int(_WORD(data, 5)[0])
    return None  # 0xFD/0xFE: more columns than MySQL allows; 0xFB: not a count


def answer_complete(data: Any, end: int | None = None) -> bool:
    """True if *data* (any bytes-like buffer, its first *end* bytes: by
    default all) starts with the whole answer to one query."""
    if end is None:
        end = len(data)
    if end < 5:
        return False
    header, head = _PACKET(data, 0)
    length = header & _LENGTH_MASK
    pos = 4 + length
    if length == 0 or length == _MAX_PAYLOAD or pos > end:
        return False
    if head in (_OK, _ERR):
        return True
    if head == _LOCAL_INFILE:
        return False
    columns = _column_count(data, head, length)
    if not columns:
        return False
    # The column definitions.
    for _ in range(columns):
        if pos + 5 > end:
            return False
        length = _PACKET(data, pos)[0] & _LENGTH_MASK
        pos += 4 + length
        if length == _MAX_PAYLOAD or pos > end:
            return False
    # The EOF between definitions and rows (an OK with 0xFE, which ends the
    # result when EOF is deprecated, is 7 bytes or more).
    if pos + 5 <= end:
        header, head = _PACKET(data, pos)
        if header & _LENGTH_MASK == _EOF_LENGTH and head == _EOF:
            pos += 4 + _EOF_LENGTH
    # The rows, until the packet that ends the result: this loop runs for
    # every row, so it does the least per packet. A row never starts with
    # 0xFE (an 8-byte length: over 16 MB) or 0xFF; a packet longer than what
    # is there (a split one included) ends beyond *end*: the loop stops.
    packet = _PACKET
    last = end - 5
    while pos <= last:
        header, head = packet(data, pos)
        pos += 4 + (header & _LENGTH_MASK)
        if head >= _EOF:
            # EOF, OK or ERR (unless the packet is empty: then *head* was
            # the next one's; never so in an answer read on the loop).
            length = header & _LENGTH_MASK
            return bool(pos <= end and 0 < length < _MAX_PAYLOAD)
    return False
