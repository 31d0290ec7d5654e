"""The Python client's part of `npm run perf:clients` (perf/clients.js), with asyncio: the same
measures as the TypeScript and Go parts, each against the same work over the sidecar's UDS
baseline transport written with asyncio streams, in the same run:
  - await round trip of a 64-byte ECHO, one in flight: p50/p99;
  - 1 MiB PUTs and whole-object GETs with --inflight requests in flight (shm: tasks sharing one
    client; UDS: one connection per task, since a baseline connection runs its requests in order),
    the payload copied from process memory into the slot (or the socket);
  - OS threads of this process before and with --threads-inflight DELAYs outstanding.
Prints one JSON object."""

import argparse
import asyncio
import json
import os
import platform
import struct
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "py-lib"))
from shmpipe import AsyncClient, protocol as P  # noqa: E402

MiB = 1 << 20
ap = argparse.ArgumentParser()
ap.add_argument("--sidecar", required=True)
ap.add_argument("--baseline", required=True)
ap.add_argument("--rtt-count", type=int, default=20000)
ap.add_argument("--mib", type=int, default=512)
ap.add_argument("--inflight", type=int, default=16)
ap.add_argument("--threads-inflight", type=int, default=10000)
a = ap.parse_args()


def threads():
    return len(os.listdir("/proc/self/task"))


def pct(xs):
    xs.sort()
    return xs[len(xs) // 2], xs[len(xs) * 99 // 100]


class Uds:
    @classmethod
    async def open(cls):
        u = cls()
        u.r, u.w = await asyncio.open_unix_connection(a.baseline, limit=4 * MiB)
        return u

    def send(self, op, args, *parts):
        n = 64 + sum(len(p) for p in parts)
        self.w.write(struct.pack("<I", n) + P.Submission(1, op, args=args).encode())
        for p in parts:
            self.w.write(p)

    async def recv(self):
        hdr = await self.r.readexactly(68)
        (n,) = struct.unpack_from("<I", hdr)
        c = P.Completion.decode(hdr, 4)
        if n > 64:
            await self.r.readexactly(n - 64)
        if c.status:
            raise RuntimeError(f"baseline op failed: {c.status}")
        return c


async def lanes(n, total, f):
    it = iter(range(total))

    async def lane(l):
        for i in it:
            await f(l, i)

    t0 = time.perf_counter()
    await asyncio.gather(*(lane(l) for l in range(n)))
    return time.perf_counter() - t0


async def main():
    out = {"client": "python", "python": platform.python_version()}
    c = await AsyncClient.connect(a.sidecar, slot_count=64, slot_size=2 * MiB, client_name="perf-clients-py")
    src = bytes(i * 7 & 0xFF for i in range(256)) * (MiB // 256)
    slot = await c.alloc()
    slot.buffer[:64] = src[:64]

    async def rtt(n):
        xs = []
        for _ in range(n):
            t0 = time.perf_counter()
            await c.echo(slot, 64)
            xs.append((time.perf_counter() - t0) * 1e6)
        return xs

    await rtt(20000)  # warm: the dispatcher's spin adapts to a busy session
    out["shm_rtt_p50_us"], out["shm_rtt_p99_us"] = pct(await rtt(a.rtt_count))
    slot.release()
    u = await Uds.open()

    async def urtt(n):
        xs = []
        for _ in range(n):
            t0 = time.perf_counter()
            u.send(P.OP_ECHO, (0, 0, 0, 0), src[:64])
            await u.recv()
            xs.append((time.perf_counter() - t0) * 1e6)
        return xs

    await urtt(5000)
    out["uds_rtt_p50_us"], out["uds_rtt_p99_us"] = pct(await urtt(a.rtt_count // 2))
    u.w.close()

    async def put(l, i):
        s = await c.alloc()
        s.buffer[:MiB] = src
        await c.put(f"perf/py/{l}", s, MiB)

    async def get(l, i):
        n = 0
        async with c.open_read(f"perf/py/{l}") as st:
            async for ch in st:
                n += len(ch.data)
        assert n == MiB

    k, total = a.inflight, a.mib
    await lanes(k, 2 * k, put)
    await lanes(k, 2 * k, get)
    out["shm_put_gbps"] = total * MiB / await lanes(k, total, put) / 1e9
    out["shm_get_gbps"] = total * MiB / await lanes(k, total, get) / 1e9

    conns = [await Uds.open() for _ in range(k)]

    async def uput(l, i):
        key = f"perf/py-uds/{l}".encode()
        conns[l].send(P.OP_PUT, (len(key), 0, 0, 0), key, src)
        await conns[l].recv()

    async def uget(l, i):
        key = f"perf/py-uds/{l}".encode()
        conns[l].send(P.OP_OPEN_READ, (0, P.RANGE_TO_END, 0, 0), key)
        n = 0
        while True:
            comp = await conns[l].recv()
            if not comp.flags & P.CQ_MORE:
                break
            n += comp.result
        assert n == MiB

    await lanes(k, 2 * k, uput)
    await lanes(k, 2 * k, uget)
    out["uds_put_gbps"] = total * MiB / await lanes(k, total, uput) / 1e9
    out["uds_get_gbps"] = total * MiB / await lanes(k, total, uget) / 1e9
    for u in conns:
        u.w.close()

    out["threads_before"] = threads()
    calls = [asyncio.ensure_future(c.delay(300_000)) for _ in range(a.threads_inflight)]
    await asyncio.sleep(0.05)
    out["threads_during"] = threads()
    await asyncio.gather(*calls)
    out["threads_after"] = threads()
    await c.close()
    print(json.dumps(out))


asyncio.run(main())
