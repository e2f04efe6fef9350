"""Sending file bytes to a client: the kernel's sendfile where the loop has it, else chunks.

The default asyncio loop hands the copy to the kernel (os.sendfile from the page cache). uvloop and
TLS transports have no sendfile, so the fallback reads 256 KiB chunks in a worker thread and writes
each with back-pressure (drain), so one big body never starves the other connections.
"""

from __future__ import annotations

import asyncio
import os
from typing import BinaryIO

from aiohttp import web

CHUNK = 256 * 1024


def _open(path: str) -> BinaryIO:
    return open(path, "rb")


def _read_at(fh: BinaryIO, offset: int, count: int) -> bytes:
    return os.pread(fh.fileno(), count, offset)


async def open_file(path: str) -> BinaryIO:
    return await asyncio.to_thread(_open, path)


async def send_file(request: web.Request, response: web.StreamResponse, fh: BinaryIO,
                    offset: int, count: int) -> int:
    """Write `count` bytes of `fh` from `offset` after the prepared response headers. Returns the
    bytes sent; raises ConnectionError when the client went away."""
    transport = request.transport
    if transport is None or transport.is_closing():
        raise ConnectionResetError("client went away")
    loop = asyncio.get_running_loop()
    if count and not transport.get_extra_info("sslcontext"):
        try:
            return await loop.sendfile(transport, fh, offset, count)
        except NotImplementedError:
            pass  # uvloop: fall through to chunked copies
    sent = 0
    while sent < count:
        n = min(CHUNK, count - sent)
        data = await asyncio.to_thread(_read_at, fh, offset + sent, n)
        if not data:
            raise ConnectionResetError("file shrank while it was being sent")
        await response.write(data)
        sent += len(data)
    return sent
