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

_OK, _ERR, _EOF, _LOCAL_INFILE = 0x00, 0xFF, 0xFE, 0xFB
_EOF_LENGTH = 5  # 0xFE, warnings (2), status (2)
_MAX_PAYLOAD = 0xFFFFFF  # a split packet: far beyond what is read on the loop


def _column_count(data: memoryview, start: int, length: int) -> int | None:
    """The length-encoded integer opening a result set."""
    head = data[start]
    if head < 0xFB:
        return head
    if head == 0xFC and length >= 3:
        return int(data[start + 1] | data[start + 2] << 8)
    return None  # 0xFD/0xFE: more columns than MySQL allows; 0xFB: not a count


def answer_complete(data: memoryview) -> bool:
    """True if *data* starts with the whole answer to one query."""
    end = len(data)
    if end < 5:
        return False
    length = data[0] | data[1] << 8 | data[2] << 16
    pos = 4 + length
    if length == 0 or length == _MAX_PAYLOAD or pos > end:
        return False
    head = data[4]
    if head in (_OK, _ERR):
        return True
    if head == _LOCAL_INFILE:
        return False
    columns = _column_count(data, 4, length)
    if not columns:
        return False
    # One loop over the packets that follow (it runs for every row): first the
    # column definitions, then rows until the packet that ends the result.
    definitions = columns
    first_after_definitions = True
    while pos + 4 <= end:
        length = data[pos] | data[pos + 1] << 8 | data[pos + 2] << 16
        start = pos + 4
        pos = start + length
        if length == _MAX_PAYLOAD or pos > end:
            return False
        if definitions:
            definitions -= 1
            continue
        if length:
            head = data[start]
            if head == _EOF:
                if first_after_definitions and length == _EOF_LENGTH:
                    # The EOF between definitions and rows (an OK with 0xFE,
                    # which ends the result when EOF is deprecated, is 7
                    # bytes or more).
                    first_after_definitions = False
                    continue
                # A row cannot start with 0xFE (an 8-byte length, over 16 MB).
                return True
            if head == _ERR:
                return True
        first_after_definitions = False
    return False
