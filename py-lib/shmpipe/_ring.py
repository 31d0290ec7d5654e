"""The agent's halves of the three SPSC rings (SPEC §4) over the mapped segment: the SQ producer
and the CQ/GQ consumers.

Python has no atomics, so this module relies on what CPython and x86-64 give (and the client
refuses other machines, see ``_check_machine``):
- A u64 position is read and written as one element of a ``memoryview.cast('Q')`` of the
  segment: CPython copies it with an 8-byte ``memcpy``, a single aligned load or store on x86-64,
  so it never tears.
- x86-64 is TSO: loads are not reordered with loads, nor stores with stores, nor a load with a
  later store. That gives the Acquire/Release pairs of SPEC §4 for free ([PUBLISH]: entries
  written before the tail store; [RELEASE]: entries read before the head store).
- The one reordering x86 does allow, a store followed by a load (the Dekker pattern of SPEC §6),
  needs a full fence; ``fence()`` is an uncontended lock acquire and release, and every lock
  acquire on x86 is a LOCK-prefixed read-modify-write, which is a full barrier.
Every position the sidecar writes is checked (SPEC §4) before use.
"""

from __future__ import annotations

import platform
import threading

from .protocol import RING

_fence_lock = threading.Lock()


def fence() -> None:
    """A full memory barrier on x86-64 (a LOCK-prefixed instruction inside the lock)."""
    _fence_lock.acquire()
    _fence_lock.release()


def machine_problem() -> str | None:
    """Why this machine cannot run the client, or None (see the module docstring)."""
    m = platform.machine().lower()
    if m not in ("x86_64", "amd64"):
        return f"the Python client needs x86-64 memory ordering (this machine is {m}): use the Go or TypeScript client"
    return None


class RingCorrupt(Exception):
    def __init__(self, ring: str, head: int, tail: int) -> None:
        super().__init__(f"{ring} ring positions are corrupt: head {head}, tail {tail}")


class _Ring:
    __slots__ = ("name", "q", "tail_i", "head_i", "entries", "capacity", "mask", "entry_size")

    def __init__(self, q: memoryview, name: str, offset: int, capacity: int, entry_size: int) -> None:
        self.name = name
        self.q = q
        self.tail_i = (offset + RING["tail"]) // 8
        self.head_i = (offset + RING["head"]) // 8
        self.entries = offset + RING["entries"]
        self.capacity = capacity
        self.mask = capacity - 1
        self.entry_size = entry_size
        tail, head = q[self.tail_i], q[self.head_i]
        if not 0 <= tail - head <= capacity:
            raise RingCorrupt(name, head, tail)


class Producer(_Ring):
    """The SQ: the agent writes 64-byte submissions."""

    __slots__ = ("tail", "published", "cached_head")

    def __init__(self, *a) -> None:
        super().__init__(*a)
        self.tail = self.published = self.q[self.tail_i]
        self.cached_head = self.q[self.head_i]

    def reserve(self) -> int:
        """Byte offset of the entry at the tail, to fill and commit(); -1 when full."""
        if self.tail - self.cached_head == self.capacity:
            head = self.q[self.head_i]  # [RELEASE] pairs with the sidecar's Release store of head
            if not self.cached_head <= head <= self.tail:
                raise RingCorrupt(self.name, head, self.tail)
            self.cached_head = head
            if self.tail - head == self.capacity:
                return -1
        return self.entries + (self.tail & self.mask) * self.entry_size

    def commit(self) -> None:
        self.tail += 1

    def publish(self) -> bool:
        """Makes committed entries visible (SPEC §6 P1) and fences (P2); True if any were new."""
        if self.tail == self.published:
            return False
        self.q[self.tail_i] = self.tail  # [PUBLISH] entries were stored before (TSO)
        self.published = self.tail
        fence()
        return True


class Consumer(_Ring):
    """The CQ or GQ: the sidecar produces, the agent consumes."""

    __slots__ = ("head", "released", "cached_tail")

    def __init__(self, *a) -> None:
        super().__init__(*a)
        self.head = self.released = self.cached_tail = self.q[self.head_i]

    def refresh(self) -> int:
        """Re-reads the tail (checked: SPEC §4) and returns the entries ready to read."""
        tail = self.q[self.tail_i]  # [PUBLISH] pairs with the sidecar's Release store of tail
        if tail < self.cached_tail or tail - self.head > self.capacity:
            raise RingCorrupt(self.name, self.head, tail)
        self.cached_tail = tail
        return tail - self.head

    def available(self) -> int:
        if self.cached_tail == self.head:
            return self.refresh()
        return self.cached_tail - self.head

    def offset_at(self, i: int) -> int:
        return self.entries + ((self.head + i) & self.mask) * self.entry_size

    def advance(self, n: int) -> None:
        self.head += n

    def release(self) -> None:
        if self.head != self.released:
            self.q[self.head_i] = self.head  # [RELEASE] our reads of the entries came first (TSO)
            self.released = self.head
