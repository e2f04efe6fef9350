"""Writing the body of a fast answer (fasthttp): in-memory views in chunks with back-pressure,
or a file span through the loop's sendfile (else chunks read in a thread)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from typing import BinaryIO

from edge360.http.wire import Answer, Request

#: bytes written per chunk of an in-memory body (then back-pressure decides)
CHUNK = 256 * 1024


class BodySender:
    """The body-writing half of fasthttp.FastProtocol."""

    _transport: asyncio.Transport | None
    _paused_writing: bool
    _resume: asyncio.Future[None] | None

    def _finish(self, answer: Answer, request: Request, sent: int, close: bool, *,
                from_task: bool) -> None:
        raise NotImplementedError

    def _unanswer(self, raw_head: bytes) -> None:
        """Nothing was written for this request: let aiohttp answer it after all."""
        raise NotImplementedError

    async def _wait_writable(self) -> None:
        if self._paused_writing:
            self._resume = asyncio.get_running_loop().create_future()
            await self._resume

    async def _send_memory(self, views: Sequence[memoryview], count: int, answer: Answer,
                           request: Request, close: bool) -> None:
        try:
            for view in views:
                for pos in range(0, len(view), CHUNK):
                    await self._wait_writable()
                    if self._transport is None:
                        return
                    self._transport.write(view[pos:pos + CHUNK])
        except ConnectionError:
            return
        self._finish(answer, request, count, close, from_task=True)

    async def _send_file(self, transport: asyncio.Transport, head: bytes, answer: Answer,
                         request: Request, close: bool, raw_head: bytes) -> None:
        assert answer.file is not None
        path, offset, count = answer.file
        loop = asyncio.get_running_loop()
        try:
            fh = await asyncio.to_thread(_open, path)
        except OSError:
            # gone (or unreadable) since the catalog saw it, and nothing written yet: aiohttp's
            # handler answers it as it would without the fast path (404, or 500)
            self._unanswer(raw_head)
            return
        try:
            try:
                transport.write(head)
                try:
                    sent = await loop.sendfile(transport, fh, offset, count, fallback=False)
                except (NotImplementedError, RuntimeError):
                    sent = await self._copy_file(fh, offset, count)  # uvloop: no sendfile
            finally:
                fh.close()
        except (ConnectionError, OSError):
            if self._transport is not None:
                self._transport.abort()  # the head went out: the body must not end cleanly
            return
        if sent != count:
            transport.abort()
            return
        self._finish(answer, request, sent, close, from_task=True)

    async def _copy_file(self, fh: BinaryIO, offset: int, count: int) -> int:
        sent = 0
        while sent < count:
            data = await asyncio.to_thread(os.pread, fh.fileno(), min(CHUNK, count - sent),
                                           offset + sent)
            if not data:
                break
            await self._wait_writable()
            if self._transport is None:
                raise ConnectionResetError("client went away")
            self._transport.write(data)
            sent += len(data)
        return sent



def _open(path: str) -> BinaryIO:
    return open(path, "rb")
