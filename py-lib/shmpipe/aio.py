"""The asyncio client: one session with the sidecar, driven from an event loop.

Everything runs on the loop's thread and nothing spins. The cq_doorbell eventfd and the control
socket are registered with the loop (``add_reader``): the first wakes ``_drain``, which consumes
the CQ and GQ, then arms ``agent_need_wakeup`` and re-checks both tails before returning (SPEC §6
C1–C4); the second turns EOF into SHMPIPE_E_DISCONNECTED for every pending call. Submissions are
written into the SQ at once and published once per loop iteration (a batch), ringing the
sidecar only when it sleeps (P1–P3). Calls beyond the in-flight budget (min of the sidecar's
``max_in_flight`` and the CQ capacity, so the CQ never overflows) or a full SQ wait in FIFO order.
"""

from __future__ import annotations

import asyncio
import json
import mmap
import os
import socket
import stat
import struct
import time
from collections import deque
from typing import AsyncIterator

from . import errors as E
from . import protocol as P
from ._ring import Consumer, Producer, RingCorrupt, fence, machine_problem
from .errors import ShmpipeError, invalid

_LEN = struct.Struct("<I")
_ONE = (1).to_bytes(8, "little")
_SQ = P.SUBMISSION
_CQ = P.COMPLETION
_GQ = P.GRANT
_REFUSALS = {E.PERMISSION, E.VERSION, "SHMPIPE_E_BUSY", E.HANDSHAKE}


class Slot:
    """A page-aligned region of the shared segment granted to this client (SPEC §5.3, §9).

    ``buffer`` is a writable memoryview of the shared memory itself: what is written there is
    what the sidecar reads, with no copy (``file.readinto(slot.buffer)``). A slot is held until
    ``release()`` or until an op that consumes it (put, Writer.write_slot) is accepted; the view
    must not be used after that, nor after the client is closed.
    """

    __slots__ = ("_client", "id", "generation", "buffer", "_owned", "_busy", "_release_deferred")

    def __init__(self, client: "AsyncClient", slot_id: int, gen: int, buffer: memoryview) -> None:
        self._client = client
        self.id = slot_id
        self.generation = gen
        self.buffer = buffer
        self._owned = True
        self._busy = 0
        self._release_deferred = False

    def __len__(self) -> int:
        return len(self.buffer)

    @property
    def released(self) -> bool:
        return not self._owned

    def release(self) -> None:
        """Gives the slot back. Idempotent; deferred while an op still uses the slot."""
        self._client._release_slot(self)


class Result:
    """The numbers of a final completion."""

    __slots__ = ("value", "aux0", "aux1")

    def __init__(self, value: int, aux0: int, aux1: int) -> None:
        self.value, self.aux0, self.aux1 = value, aux0, aux1


class _Request:
    __slots__ = ("id", "op", "name", "slot", "offset", "length", "args", "weight", "consumes", "want_msg",
                 "stream", "future", "queued")

    def __init__(self, op, name, slot, offset=0, length=0, args=(0, 0, 0, 0), weight=1, consumes=False,
                 want_msg=False, stream=None) -> None:
        self.id = 0
        self.op, self.name, self.slot, self.offset, self.length = op, name, slot, offset, length
        self.args, self.weight, self.consumes, self.want_msg, self.stream = args, weight, consumes, want_msg, stream
        self.future = None
        self.queued = False


class AsyncClient:
    """Connect with ``await AsyncClient.connect(socket_path)``; methods are coroutines."""

    # ---- connecting ---------------------------------------------------------------------------

    @classmethod
    async def connect(cls, socket_path: str, *, slot_count: int = 64, slot_size: int = 1 << 20,
                      sq_capacity: int = 1024, cq_capacity: int = 1024, client_name: str | None = None,
                      max_queued: int = 1_000_000, connect_timeout: float = 5.0,
                      unresponsive_after: float | None = 10.0) -> "AsyncClient":
        """Handshake (SPEC §10): hello → welcome with [segment_fd, sq_doorbell, cq_doorbell] →
        map the fd (never a name), check every offset → mapped."""
        if not isinstance(socket_path, str) or not socket_path or len(socket_path.encode()) > 107:
            raise invalid("connect: socket_path must be a non-empty path of at most 107 bytes")
        bad = P.check_params(sq_capacity, cq_capacity, slot_count, slot_size)
        if bad is not None:
            raise invalid(f"connect: {bad}")
        why = machine_problem()
        if why is not None:
            raise ShmpipeError(E.HANDSHAKE, why)
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        fds: list[int] = []
        mm = None
        try:
            hello = {"type": "hello", "version": P.VERSION, "slot_count": slot_count, "slot_size": slot_size,
                     "sq_capacity": sq_capacity, "cq_capacity": cq_capacity,
                     "client": client_name or f"python-{os.getpid()}"}
            try:
                reply = await asyncio.wait_for(_exchange(loop, sock, socket_path, _frame(hello), fds), connect_timeout)
            except asyncio.TimeoutError:
                raise ShmpipeError(E.HANDSHAKE, f"connect: no welcome within {connect_timeout} s") from None
            except PermissionError as e:
                raise ShmpipeError(E.PERMISSION, f"connect: {socket_path}: {e}") from e
            except OSError as e:
                raise ShmpipeError(E.DISCONNECTED, f"connect: {socket_path}: {e}") from e
            mm, est = _establish(reply, fds)
            sock.sendall(_frame({"type": "mapped"}))  # tiny: fits the socket buffer
            client = cls(loop, sock, mm, est, fds[1], fds[2], max_queued, unresponsive_after)
            fds.clear()
            return client
        except BaseException:
            for fd in fds:
                if fd >= 0:
                    os.close(fd)
            if mm is not None:
                mm.close()
            sock.close()
            raise

    def __init__(self, loop, sock, mm, est, sq_fd, cq_fd, max_queued, unresponsive_after) -> None:
        self._loop = loop
        self._sock = sock
        self._mm = mm
        self.layout: dict = est
        lay: P.Layout = est["layout"]
        self._slot_size = lay.slot_size
        self._slot_count = lay.slot_count
        self._slot_offset = lay.slot_offset
        self._sq_fd, self._cq_fd = sq_fd, cq_fd
        self._u8 = memoryview(mm)
        self._q = self._u8.cast("Q")
        self._u32 = self._u8.cast("I")
        self._sidecar_wake = P.HEADER["sidecar_need_wakeup"] // 4
        self._agent_wake = P.HEADER["agent_need_wakeup"] // 4
        self._beat_i = P.HEADER["sidecar_heartbeat"] // 8
        self._max_in_flight = est["max_in_flight"]
        self._max_queued = max_queued
        try:
            self._sq = Producer(self._q, "SQ", lay.sq_offset, lay.sq_capacity, P.ENTRY_SIZE)
            self._cq = Consumer(self._q, "CQ", lay.cq_offset, lay.cq_capacity, P.ENTRY_SIZE)
            self._gq = Consumer(self._q, "GQ", lay.gq_offset, lay.gq_capacity, P.GRANT_ENTRY_SIZE)
        except RingCorrupt as e:
            raise ShmpipeError(E.PROTOCOL, str(e)) from e
        self._pending: dict[int, _Request] = {}
        self._next_id = 1
        self._in_flight = 0
        self._queue: deque[_Request] = deque()
        self._allocs: deque[asyncio.Future] = deque()
        self._free: list[Slot] = []
        self._views: list[memoryview | None] = [None] * lay.slot_count
        self._streams: set = set()
        self._failure: ShmpipeError | None = None
        self._flush_scheduled = False
        self._retry = None
        self._frame_buf = b""
        self.draining = False
        self.closed: asyncio.Future = loop.create_future()
        self._unresponsive_after = unresponsive_after
        self._beat = self._q[self._beat_i]
        self._beat_seen = time.monotonic()
        self._watchdog = None
        self._lock = None  # set by the blocking Client, which serialises its calls with it
        loop.add_reader(cq_fd, self._on_doorbell)
        loop.add_reader(sock.fileno(), self._on_control)
        if unresponsive_after:
            self._watchdog = loop.call_later(unresponsive_after / 4, self._watch)
        self._drain()  # grants may already be waiting

    @property
    def slot_size(self) -> int:
        return self._slot_size

    # ---- ending -------------------------------------------------------------------------------

    def _fail(self, err: ShmpipeError) -> None:
        if self._failure is not None:
            return
        self._failure = err
        for h in (self._retry, self._watchdog):
            if h is not None:
                h.cancel()
        try:
            self._loop.remove_reader(self._cq_fd)
            self._loop.remove_reader(self._sock.fileno())
        except Exception:  # the loop may be closed already
            pass
        for fd in (self._sq_fd, self._cq_fd):
            try:
                os.close(fd)
            except OSError:
                pass
        self._sock.close()
        fresh = lambda: ShmpipeError(err.code, str(err).split(": ", 1)[-1])  # noqa: E731
        pending = sorted(self._pending.values(), key=lambda r: r.id)
        self._pending.clear()
        self._in_flight = 0
        for r in pending + list(self._queue):
            if not r.future.done():
                r.future.set_exception(fresh())
            if r.stream is not None:
                r.stream._end(fresh())
        self._queue.clear()
        for f in self._allocs:
            if not f.done():
                f.set_exception(fresh())
        self._allocs.clear()
        for s in self._free:
            s._owned = False
        self._free = []
        if not self.closed.done():
            self.closed.set_result(None if err.code == E.CLOSED else err)

    def _failed(self) -> ShmpipeError:
        f = self._failure
        return ShmpipeError(f.code, str(f).split(": ", 1)[-1])

    async def close(self) -> None:
        """Ends the session: pending calls fail with SHMPIPE_E_CLOSED; the sidecar reclaims the
        session's slots. The mapping is released once no slot view is referenced any more."""
        self._fail(ShmpipeError(E.CLOSED, "the client was closed"))
        self._unmap()

    def _unmap(self) -> None:
        for v in (self._q, self._u32):
            v.release()
        self._views = []
        try:
            self._u8.release()
            self._mm.close()
        except BufferError:
            pass  # a caller still holds a slot view: the mapping goes with the last reference

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    # ---- submission ---------------------------------------------------------------------------

    def _submit(self, r: _Request) -> asyncio.Future:
        if self._failure is not None:
            raise self._failed()
        r.future = self._loop.create_future()
        r.weight = min(r.weight, self._max_in_flight)
        if r.slot is not None:
            r.slot._busy += 1
        if not self._queue and self._push(r):
            return r.future
        if self._failure is not None:
            raise self._failed()
        if len(self._queue) + len(self._allocs) >= self._max_queued and r.op != P.OP_SLOT_RELEASE:
            if r.slot is not None:
                r.slot._busy -= 1
                self._maybe_deferred_release(r.slot)
            raise ShmpipeError(E.QUEUE_FULL, f"{self._max_queued} calls are already waiting for ring space")
        r.queued = True
        self._queue.append(r)
        self._arm_retry()
        return r.future

    def _push(self, r: _Request) -> bool:
        if self._in_flight + r.weight > self._max_in_flight:
            return False
        try:
            at = self._sq.reserve()
        except RingCorrupt as e:
            self._fail(ShmpipeError(E.PROTOCOL, str(e)))
            return False
        if at < 0:
            return False
        rid = self._next_id
        self._next_id += 1
        r.id = rid
        s = r.slot
        _SQ.pack_into(self._u8, at, rid, r.op, 0, 0, P.NO_SLOT if s is None else s.id,
                      0 if s is None else s.generation, r.offset, r.length, 0, *r.args)
        self._sq.commit()
        self._pending[rid] = r
        self._in_flight += r.weight
        r.queued = False
        if not self._flush_scheduled:
            if self._loop.is_running() and self._in_flight > r.weight:
                self._flush_scheduled = True
                self._loop.call_soon(self._flush)  # others in flight: one publish per loop iteration
            else:
                # Alone in flight (a round trip waits on it), or the blocking Client between
                # calls (a slot release): publish now rather than one loop iteration later.
                self._flush()
        return True

    def _flush(self) -> None:
        """Publishes this iteration's batch and rings the sidecar if it sleeps (SPEC §6 P1–P3)."""
        self._flush_scheduled = False
        if self._failure is not None:
            return
        if self._sq.publish() and self._u32[self._sidecar_wake]:  # publish() fenced (P2)
            try:
                os.write(self._sq_fd, _ONE)
            except BlockingIOError:
                pass  # the counter is at its maximum: rung already
            except OSError as e:
                self._fail(ShmpipeError(E.DISCONNECTED, f"cannot ring the sq doorbell: {e}"))

    def _pump(self) -> None:
        q = self._queue
        while q:
            r = q[0]
            if r.future.done():  # cancelled while it waited
                q.popleft()
                r.queued = False
                if r.slot is not None:
                    r.slot._busy -= 1
                    self._maybe_deferred_release(r.slot)
                continue
            if not self._push(r):
                break
            q.popleft()
        self._arm_retry()

    def _arm_retry(self) -> None:
        """The SQ head moves without a doorbell: calls blocked on SQ space re-check on a timer
        (only while such calls wait; never while idle)."""
        if self._retry is not None or self._failure is not None or not self._queue:
            return
        if self._in_flight + self._queue[0].weight > self._max_in_flight:
            return  # completions will pump
        self._retry = self._loop.call_later(0.001, self._on_retry)

    def _on_retry(self) -> None:
        self._retry = None
        if self._failure is None:
            self._pump()

    async def _call(self, r: _Request) -> Result:
        fut = self._submit(r)
        try:
            return await fut
        except asyncio.CancelledError:
            # Abandoned: the completion is still handled (slots, handles), unseen.
            raise

    # ---- completion ---------------------------------------------------------------------------

    def _on_doorbell(self) -> None:
        try:
            os.read(self._cq_fd, 8)
        except BlockingIOError:
            pass
        except OSError as e:
            self._fail(ShmpipeError(E.DISCONNECTED, f"cq doorbell failed: {e}"))
            return
        self._drain()

    def _drain(self) -> None:
        """Consumes the CQ and GQ, then arms agent_need_wakeup and re-checks (SPEC §6 C1–C6)."""
        u32, wake = self._u32, self._agent_wake
        try:
            u32[wake] = 0  # C6: awake
            while self._failure is None:
                n = self._drain_cq() + self._drain_gq()
                if self._queue:
                    self._pump()
                if n:
                    continue
                u32[wake] = 1  # C1
                fence()  # C2
                if not self._cq.refresh() and not self._gq.refresh():  # C3
                    return  # C5: sleep in the event loop
                u32[wake] = 0  # C4: work arrived meanwhile
        except (RingCorrupt, ShmpipeError) as e:
            self._fail(e if isinstance(e, ShmpipeError) else ShmpipeError(E.PROTOCOL, str(e)))

    def _drain_cq(self) -> int:
        cq = self._cq
        n = cq.available()
        for i in range(n):
            self._complete(_CQ.unpack_from(self._u8, cq.offset_at(i)))
            if self._failure is not None:
                return 0
        cq.advance(n)
        cq.release()
        return n

    def _drain_gq(self) -> int:
        gq = self._gq
        n = gq.available()
        for i in range(n):
            sid, gen = _GQ.unpack_from(self._u8, gq.offset_at(i))
            if sid >= self._slot_count:
                raise ShmpipeError(E.PROTOCOL, f"grant names slot {sid} beyond slot_count")
            self._give(Slot(self, sid, gen, self._view(sid)))
        gq.advance(n)
        gq.release()
        return n

    def _view(self, sid: int) -> memoryview:
        v = self._views[sid]
        if v is None:
            off = self._slot_offset + sid * self._slot_size
            v = self._views[sid] = self._u8[off:off + self._slot_size]
        return v

    def _give(self, s: Slot) -> None:
        while self._allocs:
            f = self._allocs.popleft()
            if not f.done():
                f.set_result(s)
                return
        self._free.append(s)

    def _complete(self, c: tuple) -> None:
        rid, status, flags, sid, sgen, result, aux0, aux1, _aux2, reserved = c
        if reserved or flags & ~(P.CQ_MORE | P.CQ_SLOT) or status > 0:
            raise ShmpipeError(E.PROTOCOL, f"malformed completion for request {rid}")
        r = self._pending.get(rid)
        if r is None:
            raise ShmpipeError(E.PROTOCOL, f"completion for unknown request {rid}")
        has_slot = flags & P.CQ_SLOT
        if has_slot and sid >= self._slot_count:
            raise ShmpipeError(E.PROTOCOL, f"completion names slot {sid} beyond slot_count")
        if flags & P.CQ_MORE:
            if has_slot:  # a stream chunk: a filled slot granted to us (SPEC §7.2)
                s = Slot(self, sid, sgen, self._view(sid))
                if r.stream is None or not r.stream._chunk(s, result, aux0, aux1):
                    self._release_slot(s)
            return
        del self._pending[rid]
        self._in_flight -= r.weight
        s = r.slot
        if s is not None:
            s._busy -= 1
            if r.consumes and not has_slot:
                s._owned = False  # consumed: the sidecar's now
                s._release_deferred = False
            else:
                self._maybe_deferred_release(s)
        err = None
        if status:
            detail = ""
            if r.want_msg and s is not None and has_slot and 0 < result <= self._slot_size:
                detail = bytes(s.buffer[:result]).decode("utf-8", "replace")
            err = E.error_from_status(status, r.name, detail)
        if r.stream is not None:
            r.stream._finish(result, aux0, err)
        if r.future.done():  # abandoned by its caller
            if err is None and r.op == P.OP_OPEN_WRITE:
                self._fire(P.OP_ABORT, "abort", result)  # nobody will commit or abort it
            return
        if err is not None:
            r.future.set_exception(err)
        else:
            r.future.set_result(Result(result, aux0, aux1))

    def _maybe_deferred_release(self, s: Slot) -> None:
        if s._busy == 0 and s._release_deferred:
            s._release_deferred = False
            self._send_release(s)

    def _fire(self, op: int, name: str, arg0: int) -> None:
        """Submits an op nobody waits for (ABORT of an abandoned handle)."""
        try:
            f = self._submit(_Request(op, name, None, args=(arg0, 0, 0, 0)))
            f.add_done_callback(lambda f: f.cancelled() or f.exception())
        except ShmpipeError:
            pass  # the session is over: the sidecar drops its handles

    def _send_release(self, s: Slot) -> None:
        try:
            f = self._submit(_Request(P.OP_SLOT_RELEASE, "release", s))
            f.add_done_callback(lambda f: f.cancelled() or f.exception())
        except ShmpipeError:
            pass

    def _release_slot(self, s: Slot) -> None:
        lock = self._lock
        if lock is not None:  # the blocking Client: a release from another thread waits its turn
            with lock:
                self._release_slot_locked(s)
        else:
            self._release_slot_locked(s)

    def _release_slot_locked(self, s: Slot) -> None:
        if not s._owned:
            return
        s._owned = False
        if self._failure is not None:
            return
        if s._busy:
            s._release_deferred = True
        else:
            self._send_release(s)

    # ---- control socket and heartbeat ---------------------------------------------------------

    def _on_control(self) -> None:
        try:
            data = self._sock.recv(65536)
        except BlockingIOError:
            return
        except OSError as e:
            self._fail(ShmpipeError(E.DISCONNECTED, f"control socket error: {e}"))
            return
        if not data:
            self._fail(ShmpipeError(E.DISCONNECTED, "the sidecar is gone (EOF on the control socket)"))
            return
        buf = self._frame_buf + data
        while len(buf) >= 4:
            (n,) = _LEN.unpack_from(buf)
            if n > P.MAX_FRAME:
                self._fail(ShmpipeError(E.PROTOCOL, f"control frame of {n} bytes exceeds {P.MAX_FRAME}"))
                return
            if len(buf) < 4 + n:
                break
            try:
                msg = json.loads(buf[4:4 + n])
            except ValueError:
                self._fail(ShmpipeError(E.PROTOCOL, "control frame is not JSON"))
                return
            buf = buf[4 + n:]
            if isinstance(msg, dict) and msg.get("type") == "draining":
                self.draining = True
            elif isinstance(msg, dict) and msg.get("type") == "error":
                self._fail(ShmpipeError(E.DISCONNECTED, f"the sidecar ended the session: {msg.get('code')} {msg.get('message', '')}"))
                return
        self._frame_buf = buf

    def _watch(self) -> None:
        """While calls are pending, the sidecar's heartbeat (SPEC §3) must move."""
        if self._failure is not None:
            return
        beat, now = self._q[self._beat_i], time.monotonic()
        if beat != self._beat or not self._pending:
            self._beat, self._beat_seen = beat, now
        elif now - self._beat_seen > self._unresponsive_after:
            self._fail(ShmpipeError(E.UNRESPONSIVE, f"calls are pending and the sidecar's heartbeat has not moved for {self._unresponsive_after} s"))
            return
        self._watchdog = self._loop.call_later(self._unresponsive_after / 4, self._watch)

    # ---- slots --------------------------------------------------------------------------------

    async def alloc(self) -> Slot:
        """A free slot; waits (FIFO) for a grant when none is free. No round trip when one is."""
        if self._failure is not None:
            raise self._failed()
        if self._free:
            return self._free.pop()
        if len(self._queue) + len(self._allocs) >= self._max_queued:
            raise ShmpipeError(E.QUEUE_FULL, f"alloc: {self._max_queued} calls are already waiting")
        f = self._loop.create_future()
        self._allocs.append(f)
        try:
            return await f
        except asyncio.CancelledError:
            if f.done() and not f.cancelled() and f.exception() is None:
                self._give(f.result())  # granted just as we gave up: pass it on
            raise

    def try_alloc(self) -> Slot | None:
        if self._failure is not None:
            raise self._failed()
        return self._free.pop() if self._free else None

    def _check_slot(self, s: Slot, op: str) -> None:
        if not isinstance(s, Slot) or s._client is not self:
            raise invalid(f"{op}: the slot must come from this client's alloc()")
        if not s._owned:
            raise invalid(f"{op}: slot {s.id} was released or consumed")

    @staticmethod
    def _check_range(s: Slot, length: int, offset: int, op: str) -> None:
        if not isinstance(length, int) or not isinstance(offset, int) or length < 0 or offset < 0 or offset + length > len(s):
            raise invalid(f"{op}: offset {offset} and length {length} must satisfy 0 ≤ offset, 0 ≤ length, offset + length ≤ {len(s)}")

    # ---- core ops -----------------------------------------------------------------------------

    async def nop(self) -> None:
        await self._call(_Request(P.OP_NOP, "nop", None))

    async def echo(self, slot: Slot, length: int, offset: int = 0) -> int:
        """Has the sidecar checksum ``length`` bytes at ``offset`` of ``slot`` in place; returns
        the CRC-32C."""
        self._check_slot(slot, "echo")
        self._check_range(slot, length, offset, "echo")
        return (await self._call(_Request(P.OP_ECHO, "echo", slot, offset, length))).aux0 & 0xFFFFFFFF

    async def delay(self, us: int) -> int:
        if not isinstance(us, int) or not 0 <= us <= P.MAX_DELAY_US:
            raise invalid(f"delay: {us} must be an integer number of microseconds in 0..={P.MAX_DELAY_US}")
        return (await self._call(_Request(P.OP_DELAY, "delay", None, args=(us, 0, 0, 0)))).value

    async def stats(self) -> dict:
        s = await self.alloc()
        try:
            r = await self._call(_Request(P.OP_STATS, "stats", s, 0, len(s)))
            if r.value > len(s):
                raise ShmpipeError(E.PROTOCOL, "stats: the result exceeds the slot")
            return json.loads(bytes(s.buffer[:r.value]))
        finally:
            s.release()

    # ---- object store (SPEC §7.2) -------------------------------------------------------------

    async def _payload_slot(self, payload: bytes, op: str) -> Slot:
        s = await self.alloc()
        if len(payload) > len(s):
            s.release()
            raise invalid(f"{op}: a request of {len(payload)} bytes does not fit a slot of {len(s)}")
        s.buffer[:len(payload)] = payload
        return s

    async def _key_call(self, op: int, name: str, key: str) -> Result:
        k = key_bytes(key, name)
        s = await self._payload_slot(k, name)
        try:
            return await self._call(_Request(op, name, s, 0, len(k), want_msg=True))
        finally:
            s.release()

    async def put(self, key: str, slot: Slot, length: int, offset: int = 0) -> dict:
        """Stores ``length`` bytes at ``offset`` of ``slot`` as ``key`` (replacing it atomically).
        The slot is consumed. Returns ``{"size", "checksum"}`` (CRC-32C as the sidecar computed it)."""
        k = key_bytes(key, "put")
        self._check_slot(slot, "put")
        self._check_range(slot, length, offset, "put")
        if offset + length + len(k) <= len(slot):
            key_at = offset + length
        elif len(k) <= offset:
            key_at = 0
        else:  # the key fits nowhere in the slot: a one-WRITE streaming upload
            w = await self.open_write(key)
            try:
                await w.write_slot(slot, length, offset)
            except BaseException:
                await w.abort()
                raise
            return await w.commit()
        slot.buffer[key_at:key_at + len(k)] = k
        r = await self._call(_Request(P.OP_PUT, "put", slot, offset, length, (len(k), key_at, 0, 0),
                                      consumes=True, want_msg=True))
        return {"size": r.value, "checksum": r.aux0 & 0xFFFFFFFF}

    async def stat(self, key: str) -> dict:
        """``{"key", "size", "checksum", "mtime_ms"}``; SHMPIPE_E_NOT_FOUND if there is none."""
        r = await self._key_call(P.OP_STAT, "stat", key)
        return {"key": key, "size": r.value, "checksum": r.aux0 & 0xFFFFFFFF, "mtime_ms": r.aux1}

    async def delete(self, key: str) -> None:
        """Deletes ``key``; succeeds when there was no such object."""
        await self._key_call(P.OP_DELETE, "delete", key)

    async def list(self, prefix: str = "", page_size: int = 1000) -> AsyncIterator[dict]:
        """The objects under ``prefix`` (whole segments) in key order: ``{"key", "size", "mtime_ms"}``."""
        check_prefix(prefix)
        if not isinstance(page_size, int) or not 1 <= page_size <= 10000:
            raise invalid(f"list: page_size {page_size} is not in 1..=10000")
        token, limit = None, page_size
        while True:
            req = json.dumps({"prefix": prefix, "token": token, "limit": limit}).encode()
            s = await self._payload_slot(req, "list")
            try:
                try:
                    r = await self._call(_Request(P.OP_LIST, "list", s, 0, len(req), want_msg=True))
                except ShmpipeError as e:
                    if e.code == E.OUT_OF_RANGE and limit > 1:  # the page does not fit: fewer entries
                        limit = max(1, limit // 2)
                        continue
                    raise
                if r.value > len(s):
                    raise ShmpipeError(E.PROTOCOL, "list: the page exceeds the slot")
                try:
                    page = json.loads(bytes(s.buffer[:r.value]))
                    entries, nxt = page["entries"], page["next"]
                except (ValueError, KeyError, TypeError) as e:
                    raise ShmpipeError(E.PROTOCOL, f"list: the sidecar returned an invalid page: {e}") from e
            finally:
                s.release()
            for e in entries:
                yield e
            if nxt is None:
                return
            token = nxt

    async def open_write(self, key: str) -> "AsyncWriter":
        r = await self._key_call(P.OP_OPEN_WRITE, "open_write", key)
        return AsyncWriter(self, key, r.value)

    def open_read(self, key: str, start: int = 0, end: int | None = None, read_ahead: int = 4) -> "AsyncReadStream":
        """Reads ``key`` (or ``[start, end)``) as an async iterator of chunks (filled slots), each
        released when the iteration moves on. Whole-object reads are verified."""
        k = key_bytes(key, "open_read")
        if not isinstance(read_ahead, int) or not 1 <= read_ahead <= 64:
            raise invalid(f"open_read: read_ahead {read_ahead} is not in 1..=64")
        if not isinstance(start, int) or start < 0 or (end is not None and (not isinstance(end, int) or end < start)):
            raise invalid(f"open_read: bad range [{start}, {end})")
        return AsyncReadStream(self, P.OP_OPEN_READ, "open_read", k,
                               (start, P.RANGE_TO_END if end is None else end, read_ahead, 0), read_ahead)

    async def put_file(self, path: str, key: str, window: int = 8) -> dict:
        """Uploads the file at ``path`` as ``key``, read straight into slots with ``readinto``."""
        k = key_bytes(key, "put_file")
        try:
            f = open(path, "rb", buffering=0)
        except OSError as e:
            raise ShmpipeError(E.IO, f"put_file: {path}: {e}") from e
        with f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise invalid(f"put_file: {path} is not a regular file")
            size = st.st_size
            if size + len(k) <= self._slot_size:
                s = await self.alloc()
                try:
                    _read_fully(f, s.buffer, size, path)
                except BaseException:
                    s.release()
                    raise
                return await self.put(key, s, size)
            lay = self.layout
            per_part = -(-lay["part_size"] // self._slot_size)
            if per_part + 1 > lay["grant_window"]:
                raise invalid(f"put_file: a streaming upload pins up to {per_part} slots but this session can hold only {lay['grant_window']}")
            w = await self.open_write(key)
            try:
                await w.write_from(f, size, window)
            except BaseException:
                await w.abort()
                raise
            return await w.commit()

    async def get_file(self, key: str, path: str, read_ahead: int = 8) -> dict:
        """Downloads ``key`` into ``path`` through a temporary file in the same directory, renamed
        into place only after the whole object arrived verified. A failure leaves no file."""
        stream = self.open_read(key, read_ahead=read_ahead)
        d, b = os.path.split(path)
        tmp = os.path.join(d, f".{b}.shmpipe-{os.urandom(6).hex()}.tmp")
        fd = -1
        ok = False
        try:
            async with stream:
                async for ch in stream:
                    if fd < 0:
                        fd = _open_tmp(tmp)
                    _pwrite_fully(fd, ch.data, ch.offset, tmp)
            if fd < 0:
                fd = _open_tmp(tmp)  # an empty object: the file must exist all the same
            os.close(fd)
            fd = -1
            os.replace(tmp, path)
            ok = True
            return stream.result
        except OSError as e:
            raise ShmpipeError(E.IO, f"get_file: {path}: {e}") from e
        finally:
            if fd >= 0:
                os.close(fd)
            if not ok:
                try:
                    os.unlink(tmp)
                except FileNotFoundError:
                    pass


class AsyncWriter:
    """A streaming upload: write slots in order, then commit() (or abort())."""

    def __init__(self, client: AsyncClient, key: str, handle: int) -> None:
        self._c, self.key, self._handle = client, key, handle
        self._done = False
        self._in_flight: deque[asyncio.Future] = deque()
        self._error: BaseException | None = None

    def _check_window(self, op: str) -> None:
        """The copying adapters allocate slots themselves: refuse a session in which a writer's
        partial part (pinned until the part is complete, SPEC §9) could take every slot."""
        lay = self._c.layout
        per_part = -(-lay["part_size"] // self._c.slot_size)
        if per_part + 1 > lay["grant_window"]:
            raise invalid(f"{op}: a streaming upload pins up to {per_part} slots (part size {lay['part_size']}) but this "
                          f"session can hold only {lay['grant_window']}: connect with more or larger slots")

    def _usable(self, op: str) -> None:
        if self._done:
            raise invalid(f"{op}: the writer for {self.key!r} was committed or aborted")
        if self._error is not None:
            raise self._error

    def _start(self, slot: Slot, length: int, offset: int) -> None:
        c = self._c
        c._check_slot(slot, "write")
        c._check_range(slot, length, offset, "write")
        self._in_flight.append(c._submit(_Request(P.OP_WRITE, "write", slot, offset, length, (self._handle, 0, 0, 0), consumes=True)))

    async def _settle(self, keep: int) -> None:
        while len(self._in_flight) > keep:
            f = self._in_flight.popleft()
            try:
                await f
            except ShmpipeError as e:
                self._error = self._error or e
        if self._error is not None:
            raise self._error

    async def write_slot(self, slot: Slot, length: int, offset: int = 0) -> None:
        """Appends ``length`` bytes at ``offset`` of ``slot`` (consumed) and waits until the sidecar took them."""
        self._usable("write")
        self._start(slot, length, offset)
        await self._settle(0)

    async def write(self, data: bytes) -> None:
        """Copies ``data`` into slots and sends them (up to 8 in flight)."""
        self._usable("write")
        self._check_window("write")
        mv = memoryview(data)
        while mv:
            s = await self._c.alloc()
            n = min(len(s), len(mv))
            s.buffer[:n] = mv[:n]
            mv = mv[n:]
            self._start(s, n, 0)
            await self._settle(8)

    async def write_from(self, f, size: int | None = None, window: int = 8) -> int:
        """Reads the binary file ``f`` straight into slots (``readinto``) until EOF, or ``size``
        bytes, and sends them with ``window`` WRITEs in flight. Returns the bytes sent."""
        self._usable("write")
        self._check_window("write_from")
        total = 0
        while size is None or total < size:
            s = await self._c.alloc()
            want = len(s) if size is None else min(len(s), size - total)
            try:
                n = _readinto_up_to(f, s.buffer, want)
            except BaseException:
                s.release()
                raise
            if n == 0:
                s.release()
                if size is not None:
                    raise ShmpipeError(E.IO, f"write_from: the source shrank ({total} of {size} bytes)")
                break
            total += n
            self._start(s, n, 0)
            await self._settle(window)
        return total

    async def commit(self) -> dict:
        """Makes the object visible; returns ``{"size", "checksum"}``. A failed writer is aborted."""
        if self._done:
            raise invalid(f"commit: the writer for {self.key!r} was committed or aborted")
        try:
            await self._settle(0)
        except BaseException:
            await self.abort()
            raise
        self._done = True
        r = await self._c._call(_Request(P.OP_COMMIT, "commit", None, args=(self._handle, 0, 0, 0)))
        return {"size": r.value, "checksum": r.aux0 & 0xFFFFFFFF}

    async def abort(self) -> None:
        """Abandons the upload: nothing of it stays in the store. Idempotent."""
        if self._done:
            return
        self._done = True
        try:
            await self._settle(0)
        except ShmpipeError:
            pass
        try:
            await self._c._call(_Request(P.OP_ABORT, "abort", None, args=(self._handle, 0, 0, 0)))
        except ShmpipeError:
            pass


class Chunk:
    """``data`` (a memoryview at the start of ``slot.buffer``) at ``offset`` in the object."""

    __slots__ = ("slot", "data", "offset")

    def __init__(self, slot: Slot, data: memoryview, offset: int) -> None:
        self.slot, self.data, self.offset = slot, data, offset


class AsyncReadStream:
    """An object's bytes as filled slots: ``async for chunk in stream``. Each chunk's slot is
    released when the iteration moves on; ``result`` says how the stream ended."""

    def __init__(self, client: AsyncClient, op: int, name: str, payload: bytes, args: tuple, read_ahead: int) -> None:
        self._c = client
        self._op, self._name, self._payload, self._args, self._read_ahead = op, name, payload, args, read_ahead
        self._chunks: deque[Chunk] = deque()
        self._wake: asyncio.Future | None = None
        self._handle = 0
        self._cancelled = False
        self._ended = False
        self._error: ShmpipeError | None = None
        self._current: Chunk | None = None
        self._started = False
        self._payload_slot: Slot | None = None
        self.result: dict | None = None

    # sink side (called by the client while draining)
    def _chunk(self, s: Slot, length: int, offset: int, handle: int) -> bool:
        if not self._handle:
            self._handle = handle
            if self._cancelled:
                self._c._fire(P.OP_ABORT, "abort", handle)
        if self._cancelled or self._ended or length > len(s):
            return False
        self._chunks.append(Chunk(s, s.buffer[:length], offset))
        self._notify()
        return True

    def _finish(self, total: int, verified: int, err: ShmpipeError | None) -> None:
        if err is None:
            self.result = {"size": total, "verified": verified == 1}
        self._end(err)

    def _end(self, err: ShmpipeError | None) -> None:
        if self._ended:
            return
        self._ended, self._error = True, err
        self._notify()

    def _notify(self) -> None:
        w = self._wake
        if w is not None and not w.done():
            w.set_result(None)

    async def _start(self) -> None:
        self._started = True
        c = self._c
        self._payload_slot = s = await c._payload_slot(self._payload, self._name)
        r = _Request(self._op, self._name, s, 0, len(self._payload), self._args, weight=1 + self._read_ahead,
                     consumes=True, want_msg=True, stream=self)
        fut = c._submit(r)
        fut.add_done_callback(lambda f: f.cancelled() or f.exception())  # the sink sees the outcome

    def _release_current(self) -> None:
        if self._current is not None:
            self._current.slot.release()
            self._current = None

    def __aiter__(self) -> "AsyncReadStream":
        return self

    async def __anext__(self) -> Chunk:
        self._release_current()
        if not self._started:
            await self._start()
        while True:
            if self._chunks:
                self._current = self._chunks.popleft()
                return self._current
            if self._ended:
                if self._payload_slot is not None:
                    self._payload_slot.release()  # ours again when the stream could not open
                if self._error is not None:
                    raise self._error
                raise StopAsyncIteration
            self._wake = self._c._loop.create_future()
            await self._wake
            self._wake = None

    async def read_all(self) -> bytes:
        """The remaining bytes, copied out (for small objects and tests)."""
        parts = [bytes(ch.data) async for ch in self]
        return b"".join(parts)

    def close(self) -> None:
        """Releases every chunk held and cancels the rest (ABORT of the stream's handle)."""
        self._release_current()
        while self._chunks:
            self._chunks.popleft().slot.release()
        if self._started and not self._ended and not self._cancelled:
            self._cancelled = True
            if self._handle:
                self._c._fire(P.OP_ABORT, "abort", self._handle)
        elif self._payload_slot is not None and self._ended:
            self._payload_slot.release()

    async def __aenter__(self) -> "AsyncReadStream":
        return self

    async def __aexit__(self, *exc) -> None:
        self.close()


# ---- helpers ---------------------------------------------------------------------------------

def key_problem(key: object) -> str | None:
    """Why ``key`` is not a valid object key (SPEC §7.2), or None."""
    if not isinstance(key, str):
        return "must be a string"
    try:
        b = key.encode("utf-8")
    except UnicodeEncodeError:
        return "is not well-formed Unicode (lone surrogate)"
    if not b:
        return "must not be empty"
    if len(b) > P.MAX_KEY_LEN:
        return f"is {len(b)} bytes of UTF-8, more than {P.MAX_KEY_LEN}"
    if key.startswith("/") or key.endswith("/"):
        return "must not start or end with '/'"
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in key):
        return "must not contain control characters"
    segs = key.split("/")
    for s in segs:
        if s == "":
            return "must not contain empty segments ('//')"
        if s in (".", ".."):
            return "must not contain '.' or '..' segments"
    last = segs[-1]
    i = last.rfind("#")
    if i >= 0 and i + 1 < len(last) and last[i + 1:].isascii() and last[i + 1:].isdigit():
        return "must not end in '#' followed by digits (reserved for uploads in progress)"
    return None


def key_bytes(key: object, op: str) -> bytes:
    bad = key_problem(key)
    if bad is not None:
        shown = repr(key[:80]) if isinstance(key, str) else ""
        raise invalid(f"{op}: key {shown} {bad}")
    return key.encode("utf-8")  # type: ignore[union-attr]


def check_prefix(prefix: object) -> None:
    if not isinstance(prefix, str):
        raise invalid("list: prefix must be a string")
    t = prefix[:-1] if prefix.endswith("/") else prefix
    if t:
        bad = key_problem(t)
        if bad is not None and not bad.startswith("must not end in '#'"):
            raise invalid(f"list: prefix {prefix[:80]!r} {bad}")


def _frame(msg: dict) -> bytes:
    body = json.dumps(msg).encode()
    if len(body) > P.MAX_FRAME:
        raise invalid("control frame too large")
    return _LEN.pack(len(body)) + body


async def _readable(loop, sock) -> None:
    f = loop.create_future()
    loop.add_reader(sock.fileno(), lambda: f.done() or f.set_result(None))
    try:
        await f
    finally:
        loop.remove_reader(sock.fileno())


async def _recv_exact(loop, sock, n: int, fds: list[int]) -> bytes:
    """Exactly n bytes, collecting the file descriptors that ride on them (SCM_RIGHTS)."""
    out = b""
    while len(out) < n:
        try:
            data, got, flags, _ = socket.recv_fds(sock, n - len(out), 3)
        except BlockingIOError:
            await _readable(loop, sock)
            continue
        fds.extend(got)
        if flags & socket.MSG_CTRUNC:
            raise ShmpipeError(E.HANDSHAKE, "handshake: more file descriptors than expected")
        if not data:
            raise ShmpipeError(E.DISCONNECTED, "handshake: the sidecar closed the connection")
        out += data
    return out


async def _exchange(loop, sock, path: str, hello: bytes, fds: list[int]) -> bytes:
    await loop.sock_connect(sock, path)
    await loop.sock_sendall(sock, hello)
    # Exactly the reply frame: what follows (a `draining` notice) is the control reader's.
    (n,) = _LEN.unpack(await _recv_exact(loop, sock, 4, fds))
    if n == 0 or n > P.MAX_FRAME:
        raise ShmpipeError(E.HANDSHAKE, f"handshake: reply frame length {n} out of range")
    return await _recv_exact(loop, sock, n, fds)


def _establish(reply: bytes, fds: list[int]):
    """Checks the welcome and the segment (SPEC §10 step 3); maps it and closes its fd."""
    try:
        w = json.loads(reply)
    except ValueError as e:
        raise ShmpipeError(E.HANDSHAKE, "handshake: the reply is not JSON") from e
    if not isinstance(w, dict):
        raise ShmpipeError(E.HANDSHAKE, "handshake: the reply is not a JSON object")
    if w.get("type") == "error":
        code = w.get("code") if w.get("code") in _REFUSALS else E.HANDSHAKE
        raise ShmpipeError(code, f"the sidecar refused the connection: {w.get('message', w.get('code'))}")
    try:
        if w["type"] != "welcome":
            raise ValueError(f"type {w['type']!r}")
        if w["version"] != P.VERSION:
            raise ShmpipeError(E.VERSION, f"handshake: the sidecar speaks version {w['version']}, this client {P.VERSION}")
        lw, limits = w["layout"], w["limits"]
        generation = int(w["generation"])
        want = P.compute_layout(lw["sq_capacity"], lw["cq_capacity"], lw["slot_count"], lw["slot_size"])
        max_in_flight = int(limits["max_in_flight"])
        read_reserve = min(int(limits.get("read_reserve", 0)), want.slot_count)
        part_size = int(limits.get("part_size", 8 << 20))
    except ShmpipeError:
        raise
    except (KeyError, ValueError, TypeError) as e:
        raise ShmpipeError(E.HANDSHAKE, f"handshake: unexpected reply: {e}") from e
    if len(fds) != 3:
        raise ShmpipeError(E.HANDSHAKE, f"handshake: expected 3 file descriptors, got {len(fds)}")
    for k in ("sq_offset", "cq_offset", "gq_offset", "gq_capacity", "slot_offset"):
        if lw.get(k) != getattr(want, k):
            raise ShmpipeError(E.HANDSHAKE, f"handshake: welcome layout field {k} disagrees with SPEC §4")
    if w.get("segment_size") != want.segment_size:
        raise ShmpipeError(E.HANDSHAKE, "handshake: welcome segment_size disagrees with SPEC §4")
    # A mapping longer than the file would fault past its end: refuse it.
    if os.fstat(fds[0]).st_size < want.segment_size:
        raise ShmpipeError(E.HANDSHAKE, "handshake: the segment file is smaller than segment_size")
    # The header and rings are faulted in now (the hot path); a slot's pages when first used, so
    # memory follows the slots actually cycled through, not the whole pool (issue #15).
    mm = mmap.mmap(fds[0], want.segment_size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE)
    _populate_read(mm, want.slot_offset)
    os.close(fds[0])  # the mapping keeps the memory
    fds[0] = -1
    try:
        state = memoryview(mm).cast("I")[P.HEADER["state"] // 4]
        if state != P.STATE_READY:
            raise ShmpipeError(E.HANDSHAKE, f"handshake: segment state is {state}, not READY")
        try:
            got, hgen = P.decode_header(mm[:P.HEADER_SIZE])
        except P.HeaderMismatch as e:
            raise ShmpipeError(E.VERSION if e.field == "version" else E.HANDSHAKE, f"handshake: {e}") from e
        if got != want or hgen != generation:
            raise ShmpipeError(E.HANDSHAKE, "handshake: the segment header disagrees with the welcome")
    except BaseException:
        mm.close()
        raise
    est = {"session": w.get("session"), "generation": generation, "segment": w.get("segment"), "layout": want,
           "max_in_flight": min(max_in_flight, want.cq_capacity), "read_reserve": read_reserve,
           "grant_window": want.slot_count - read_reserve, "part_size": part_size}
    return mm, est


def _read_fully(f, view: memoryview, n: int, path: str) -> None:
    got = 0
    while got < n:
        k = f.readinto(view[got:n])
        if not k:
            raise ShmpipeError(E.IO, f"put_file: {path} shrank while it was read")
        got += k


def _readinto_up_to(f, view: memoryview, n: int) -> int:
    got = 0
    while got < n:
        k = f.readinto(view[got:n])
        if not k:
            break
        got += k
    return got


def _open_tmp(tmp: str) -> int:
    return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)


def _pwrite_fully(fd: int, data: memoryview, pos: int, path: str) -> None:
    while data:
        n = os.pwrite(fd, data, pos)
        data, pos = data[n:], pos + n


def _populate_read(mm: mmap.mmap, length: int) -> None:
    """Maps the first `length` bytes' pages into this process (MADV_POPULATE_READ where the
    kernel has it, else a read of each page)."""
    advice = getattr(mmap, "MADV_POPULATE_READ", None)
    if advice is not None and length > 0:
        try:
            mm.madvise(advice, 0, length)
            return
        except OSError:
            pass
    for off in range(0, length, 4096):
        mm[off]
