"""Send progress of a connection (limits.send_timeout): how many bytes the peer acknowledged and
how many still wait in the kernel, so a reader that stopped reading can be cut off, whether the
bytes went out through the transport's buffer or the kernel's sendfile."""

from __future__ import annotations

import asyncio
import fcntl
import socket
import struct
import termios
import time
from typing import Any

# Linux struct tcp_info (include/uapi/linux/tcp.h): tcpi_bytes_acked is the u64 at offset 120
_TCP_INFO_LEN = 128
_BYTES_ACKED = struct.Struct("=Q")
_BYTES_ACKED_AT = 120


def _bytes_acked(sock: socket.socket | None) -> int | None:
    """Bytes the peer has acknowledged (Linux TCP_INFO); None where the kernel does not say."""
    if sock is None or not hasattr(socket, "TCP_INFO"):
        return None
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_LEN)
    except OSError:
        return None
    if len(info) < _BYTES_ACKED_AT + 8:
        return None
    return int(_BYTES_ACKED.unpack_from(info, _BYTES_ACKED_AT)[0])


def _kernel_queue(sock: socket.socket | None) -> int:
    """Bytes still in the socket's send queue (SIOCOUTQ); 0 where unknown."""
    if sock is None:
        return 0
    try:
        raw = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
    except (OSError, ValueError):
        return 0
    return int(struct.unpack("i", raw)[0])


def check_send_progress(transport: asyncio.Transport, progress: list[Any],
                        send_timeout: float) -> bool | None:
    """One watchdog look at a connection's pending output; `progress` is [mark, since] and is
    updated. Whether output is pending; None when it had not moved for `send_timeout` seconds
    and the connection was aborted. Progress is the peer's acknowledged byte count where the kernel
    reports it (this also covers bytes the kernel sends itself with sendfile), else the
    transport's buffer size."""
    sock = transport.get_extra_info("socket")
    buffered = transport.get_write_buffer_size()
    pending = buffered > 0 or _kernel_queue(sock) > 0
    now = time.monotonic()
    if not pending:
        # idle (most keep-alive connections, most of the time): no TCP_INFO read for them
        progress[0], progress[1] = None, now
        return False
    mark = (_bytes_acked(sock), buffered)
    if mark != progress[0]:
        progress[0], progress[1] = mark, now
    elif now - progress[1] >= send_timeout:
        # shutdown first: a kernel sendfile waiting for the socket to become writable then
        # fails at once with EPIPE instead of waiting forever on a descriptor closed under it
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        transport.abort()
        return None
    return True
