"""Is there something to read on a connection's socket? Asked without a syscall
that releases the GIL.

``select.poll().poll(0)`` releases the GIL like every blocking call. On a busy
event loop each release lets one of the worker threads (sync routes) in, and
the loop then waits for it to hand the GIL back: a stall per call. libc's
``poll()`` with a zero timeout never blocks, so it is called through
``ctypes.PyDLL``, which keeps the GIL. Where that is not available (no libc
``poll``), the stdlib is used.
"""

from __future__ import annotations

import ctypes
import select
import socket
from collections.abc import Callable
from typing import Any

_POLLIN = select.POLLIN
_POLLPRI = select.POLLPRI


class _PollFd(ctypes.Structure):
    _fields_ = [
        ("fd", ctypes.c_int),
        ("events", ctypes.c_short),
        ("revents", ctypes.c_short),
    ]


# The libc functions are declared without argtypes: converting arguments
# through argtypes costs as much again as the call. Every argument is then
# passed already in its C type (a pointer, a c_ulong, a c_size_t) or as an int
# where C takes an int.


def _libc(
    name: str, restype: type[ctypes._SimpleCData[Any]]
) -> Callable[..., int] | None:
    """libc's *name* through ctypes.PyDLL, which keeps the GIL; None without."""
    try:
        function = getattr(ctypes.PyDLL(None), name)
    except (OSError, AttributeError, TypeError):  # pragma: no cover - not libc
        return None
    function.restype = restype
    return function  # type: ignore[no-any-return]


_poll = _libc("poll", ctypes.c_int)
_ONE_FD = ctypes.c_ulong(1)  # poll()'s nfds_t


def readable_now(fd: int) -> bool:
    """True if a read on *fd* would not block: data, EOF or an error is there."""
    if _poll is not None:
        pollfd = _PollFd(fd, _POLLIN | _POLLPRI, 0)
        return _poll(ctypes.byref(pollfd), _ONE_FD, 0) > 0
    poller = select.poll()  # pragma: no cover - platforms without libc poll
    poller.register(fd, _POLLIN | _POLLPRI)
    return bool(poller.poll(0))


def readable_check(fd: int) -> Callable[[], bool]:
    """:func:`readable_now` for one *fd*, its ``pollfd`` built once: asked
    several times per query, building it is most of the cost."""
    if _poll is None:  # pragma: no cover - platforms without libc poll
        return lambda: readable_now(fd)
    poll = _poll
    pollfd = ctypes.byref(_PollFd(fd, _POLLIN | _POLLPRI, 0))  # keeps it alive

    def readable() -> bool:
        return poll(pollfd, _ONE_FD, 0) > 0

    return readable


_recv = _libc("recv", ctypes.c_ssize_t)
_PEEK = socket.MSG_PEEK | socket.MSG_DONTWAIT
_lengths: dict[int, ctypes.c_size_t] = {}  # buffer sizes, as recv()'s size_t


def peek(fd: int, buffer: ctypes.Array[ctypes.c_char]) -> int:
    """Copy what waits on *fd* (up to the buffer's size) into *buffer* without
    consuming it; the number of bytes: 0 at the end of the stream, -1 if
    nothing is there yet (or on an error, which a read will then report)."""
    if _recv is not None:
        length = _lengths.get(len(buffer))
        if length is None:
            length = _lengths[len(buffer)] = ctypes.c_size_t(len(buffer))
        return _recv(fd, buffer, length, _PEEK)
    sock = socket.socket(fileno=fd)  # pragma: no cover - without libc recv
    try:
        return sock.recv_into(memoryview(buffer).cast("B"), len(buffer), _PEEK)
    except OSError:
        return -1
    finally:
        sock.detach()
