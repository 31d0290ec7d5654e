"""The blocking client: the asyncio client (``aio.py``) driven by a private event loop, one call
at a time. Each method runs its coroutine to completion on that loop, so the session's
completions, grants and control frames are handled while a call waits, and nothing runs between
calls (no thread of its own). Safe to share between threads: calls are serialised by a lock. For
many calls in flight at once use ``AsyncClient``.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Iterator

from .aio import AsyncClient, AsyncReadStream, AsyncWriter, Chunk, Slot


class Client:
    """``Client(socket_path, **options)`` connects (options as ``AsyncClient.connect``)."""

    def __init__(self, socket_path: str, **options) -> None:
        self._lock = threading.RLock()
        self._loop = asyncio.new_event_loop()
        try:
            self._a = self._loop.run_until_complete(AsyncClient.connect(socket_path, **options))
        except BaseException:
            self._loop.close()
            raise
        self._a._lock = self._lock

    def _run(self, coro):
        with self._lock:
            return self._loop.run_until_complete(coro)

    @property
    def layout(self) -> dict:
        return self._a.layout

    @property
    def draining(self) -> bool:
        return self._a.draining

    @property
    def slot_size(self) -> int:
        return self._a.slot_size

    def close(self) -> None:
        with self._lock:
            if self._loop.is_closed():
                return
            self._loop.run_until_complete(self._a.close())
            self._loop.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # slots
    def alloc(self) -> Slot:
        return self._run(self._a.alloc())

    def try_alloc(self) -> Slot | None:
        with self._lock:
            self._a._drain()  # grants that arrived since the last call
            return self._a.try_alloc()

    # core ops
    def nop(self) -> None:
        self._run(self._a.nop())

    def echo(self, slot: Slot, length: int, offset: int = 0) -> int:
        return self._run(self._a.echo(slot, length, offset))

    def delay(self, us: int) -> int:
        return self._run(self._a.delay(us))

    def stats(self) -> dict:
        return self._run(self._a.stats())

    # object store
    def put(self, key: str, slot: Slot, length: int, offset: int = 0) -> dict:
        return self._run(self._a.put(key, slot, length, offset))

    def stat(self, key: str) -> dict:
        return self._run(self._a.stat(key))

    def delete(self, key: str) -> None:
        self._run(self._a.delete(key))

    def list(self, prefix: str = "", page_size: int = 1000) -> Iterator[dict]:
        agen = self._a.list(prefix, page_size)
        while True:
            try:
                yield self._run(agen.__anext__())
            except StopAsyncIteration:
                return

    def open_write(self, key: str) -> "Writer":
        return Writer(self, self._run(self._a.open_write(key)))

    def open_read(self, key: str, start: int = 0, end: int | None = None, read_ahead: int = 4) -> "ReadStream":
        return ReadStream(self, self._a.open_read(key, start, end, read_ahead))

    def put_file(self, path: str, key: str) -> dict:
        return self._run(self._a.put_file(path, key))

    def get_file(self, key: str, path: str) -> dict:
        return self._run(self._a.get_file(key, path))


class Writer:
    """A streaming upload (blocking): write_slot / write / write_from, then commit() or abort()."""

    def __init__(self, client: Client, w: AsyncWriter) -> None:
        self._c, self._w = client, w
        self.key = w.key

    def write_slot(self, slot: Slot, length: int, offset: int = 0) -> None:
        self._c._run(self._w.write_slot(slot, length, offset))

    def write(self, data: bytes) -> None:
        self._c._run(self._w.write(data))

    def write_from(self, f, size: int | None = None, window: int = 8) -> int:
        return self._c._run(self._w.write_from(f, size, window))

    def commit(self) -> dict:
        return self._c._run(self._w.commit())

    def abort(self) -> None:
        self._c._run(self._w.abort())


class ReadStream:
    """A read stream (blocking): iterate chunks (each released when the iteration moves on)."""

    def __init__(self, client: Client, s: AsyncReadStream) -> None:
        self._c, self._s = client, s

    def __iter__(self) -> "ReadStream":
        return self

    def __next__(self) -> Chunk:
        try:
            return self._c._run(self._s.__anext__())
        except StopAsyncIteration:
            raise StopIteration from None

    @property
    def result(self) -> dict | None:
        return self._s.result

    def read_all(self) -> bytes:
        return b"".join(bytes(ch.data) for ch in self)

    def close(self) -> None:
        with self._c._lock:
            self._s.close()

    def __enter__(self) -> "ReadStream":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
