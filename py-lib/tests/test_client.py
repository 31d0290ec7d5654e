"""The Python clients end to end against the real sidecar binary."""

import asyncio
import os
import subprocess
import sys
import threading

import pytest

from conftest import ROOT, wait_for
from shmpipe import AsyncClient, Client, ShmpipeError, errors as E, protocol as P


def test_blocking_core_ops(sidecar):
    with Client(sidecar.socket, slot_count=8, slot_size=65536) as c:
        lay = c.layout["layout"]
        assert (lay.slot_count, lay.slot_size) == (8, 65536) and c.layout["generation"] != 0
        s = c.alloc()
        assert len(s.buffer) == 65536 and not s.buffer.readonly
        data = os.urandom(4000)
        s.buffer[96:96 + len(data)] = data
        assert c.echo(s, len(data), 96) == P.crc32c(data)
        c.nop()
        assert c.delay(20_000) == 20_000
        with pytest.raises(ShmpipeError) as e:
            c.echo(s, 1000, 65000)
        assert e.value.code == E.INVALID_ARGUMENT
        s.release()
        with pytest.raises(ShmpipeError) as e:
            c.echo(s, 1)
        assert e.value.code == E.INVALID_ARGUMENT
        assert "session" in c.stats()


def test_blocking_objects_and_files(sidecar, tmp_path):
    with Client(sidecar.socket, slot_count=32, slot_size=1 << 20) as c:
        small = os.urandom(10_000)
        s = c.alloc()
        s.buffer[:len(small)] = small
        r = c.put("py/small.bin", s, len(small))
        assert r == {"size": len(small), "checksum": P.crc32c(small)}
        with pytest.raises(ShmpipeError) as e:  # consumed
            c.echo(s, 1)
        assert e.value.code == E.INVALID_ARGUMENT
        st = c.stat("py/small.bin")
        assert st["size"] == len(small) and st["checksum"] == r["checksum"] and st["mtime_ms"] > 0

        big = os.urandom(5 << 20 | 12345)
        w = c.open_write("py/big.bin")
        w.write(big)
        assert c.stat("py/small.bin")  # other calls interleave with an open writer
        assert w.commit()["size"] == len(big)
        with c.open_read("py/big.bin") as rs:
            assert rs.read_all() == big and rs.result == {"size": len(big), "verified": True}
        with c.open_read("py/big.bin", 1 << 20, (3 << 20) + 5) as rs:
            assert rs.read_all() == big[1 << 20:(3 << 20) + 5] and rs.result["verified"] is False

        for i, n in enumerate((0, 1, 65536, 1 << 20, (3 << 20) + 1)):
            src, dst = tmp_path / "src", tmp_path / "dst"
            data = os.urandom(n)
            src.write_bytes(data)
            c.put_file(str(src), f"py/files/{i}")
            assert c.get_file(f"py/files/{i}", str(dst)) == {"size": n, "verified": True}
            assert dst.read_bytes() == data

        keys = [e["key"] for e in c.list("py", page_size=2)]
        assert keys == ["py/big.bin"] + [f"py/files/{i}" for i in range(5)] + ["py/small.bin"]
        c.delete("py/small.bin")
        with pytest.raises(ShmpipeError) as e:
            c.stat("py/small.bin")
        assert e.value.code == E.NOT_FOUND and e.value.status == -9
        with pytest.raises(ShmpipeError) as e:
            c.get_file("py/small.bin", str(tmp_path / "missing"))
        assert e.value.code == E.NOT_FOUND
        assert not (tmp_path / "missing").exists() and not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]
        c.delete("py/small.bin")  # no such object: fine
        w = c.open_write("py/aborted")
        w.write(big[: 2 << 20])
        w.abort()
        with pytest.raises(ShmpipeError) as e:
            c.stat("py/aborted")
        assert e.value.code == E.NOT_FOUND


@pytest.mark.parametrize("key", ["", "/a", "a/", "a//b", "a/../b", "a/./b", "a\x01b", "a/b#12", "x" * 1025, "\ud800"])
def test_bad_keys_fail_locally(sidecar, key):
    with Client(sidecar.socket, slot_count=4, slot_size=65536) as c:
        with pytest.raises(ShmpipeError) as e:
            c.stat(key)
        assert e.value.code == E.INVALID_ARGUMENT


def test_bad_connects():
    with pytest.raises(ShmpipeError) as e:
        Client("")
    assert e.value.code == E.INVALID_ARGUMENT
    with pytest.raises(ShmpipeError) as e:
        Client("/nonexistent/dir/sock")
    assert e.value.code == E.DISCONNECTED
    with pytest.raises(ShmpipeError) as e:
        Client("/tmp/x.sock", slot_size=1000)
    assert e.value.code == E.INVALID_ARGUMENT


def test_async_many_in_flight_and_cancellation(sidecar):
    async def main():
        c = await AsyncClient.connect(sidecar.socket, slot_count=16, slot_size=1 << 20)
        try:
            # 5,000 calls in flight from one task, more than the SQ holds: they queue and all complete.
            await asyncio.gather(*(c.nop() for _ in range(5000)))
            slots = [await c.alloc() for _ in range(8)]
            for i, s in enumerate(slots):
                s.buffer[:100] = bytes([i]) * 100
            crcs = await asyncio.gather(*(c.echo(s, 100) for s in slots))
            assert crcs == [P.crc32c(bytes([i]) * 100) for i in range(8)]
            # A call abandoned by its task: the session goes on, and a slot in flight is not lost.
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(c.delay(5_000_000), 0.05)
            held = [c.try_alloc() for _ in range(32)]
            held = [s for s in held if s is not None]
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(c.alloc(), 0.05)  # none free: waits, then gives up
            for s in held + slots:
                s.release()
            s = await c.alloc()
            assert await c.echo(s, 10) == P.crc32c(bytes(s.buffer[:10]))
            # A read stream closed early is cancelled, and its slots come back.
            w = await c.open_write("aio/obj")
            await w.write(os.urandom(5 << 20))
            await w.commit()
            stream = c.open_read("aio/obj", read_ahead=2)
            async for ch in stream:
                assert len(ch.data) > 0
                break
            stream.close()
            for _ in range(3):
                await c.nop()
            free = [c.try_alloc() for _ in range(16)]
            assert len([f for f in free if f is not None]) >= 8
        finally:
            await c.close()

    asyncio.run(main())


def test_sidecar_killed_mid_call(sidecar):
    async def main():
        c = await AsyncClient.connect(sidecar.socket, slot_count=16, slot_size=1 << 20)
        w = await c.open_write("big")
        await w.write(os.urandom(3 << 20))
        await w.commit()
        calls = [asyncio.ensure_future(c.delay(30_000_000)) for _ in range(200)]
        stream = c.open_read("big", read_ahead=1)  # one chunk held: the stream waits for us
        first = await stream.__anext__()
        assert len(first.data) > 0  # held: the stream waits for this slot to come back
        await c.nop()
        sidecar.kill()
        t0 = asyncio.get_running_loop().time()

        async def rest_of_stream():
            async for _ in stream:
                pass

        results = await asyncio.wait_for(asyncio.gather(*calls, rest_of_stream(), return_exceptions=True), 10)
        assert asyncio.get_running_loop().time() - t0 < 5
        for r in results:
            assert isinstance(r, ShmpipeError) and r.code == E.DISCONNECTED, r
        with pytest.raises(ShmpipeError) as e:
            await c.nop()
        assert e.value.code == E.DISCONNECTED
        with pytest.raises(ShmpipeError) as e:
            await c.alloc()
        assert e.value.code == E.DISCONNECTED
        assert (await c.closed).code == E.DISCONNECTED
        await c.close()

    asyncio.run(main())


def test_blocking_call_when_sidecar_dies(sidecar):
    c = Client(sidecar.socket, slot_count=4, slot_size=65536)
    threading.Timer(0.2, sidecar.kill).start()
    with pytest.raises(ShmpipeError) as e:
        c.delay(30_000_000)
    assert e.value.code == E.DISCONNECTED
    c.close()


def test_unresponsive_sidecar(sidecar):
    c = Client(sidecar.socket, slot_count=4, slot_size=65536, unresponsive_after=0.5)
    assert c.delay(1_200_000) == 1_200_000  # a long call on a live sidecar is fine
    sidecar.proc.send_signal(19)  # SIGSTOP

    def stopped():
        with open(f"/proc/{sidecar.proc.pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "T"

    wait_for(stopped, what="the sidecar to stop")
    with pytest.raises(ShmpipeError) as e:
        c.delay(10_000)
    assert e.value.code == E.UNRESPONSIVE
    c.close()


def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "shmpipe", *args], capture_output=True, text=True, timeout=60,
                          cwd=os.path.join(ROOT, "py-lib"), env={**os.environ, **(env or {})})


def test_cli(sidecar, tmp_path):
    src = tmp_path / "a.bin"
    data = os.urandom((2 << 20) + 3)
    src.write_bytes(data)
    r = _cli("--sidecar", sidecar.socket, "put", "cli/a.bin", str(src), "--json")
    assert r.returncode == 0, r.stderr
    import json
    assert json.loads(r.stdout) == {"key": "cli/a.bin", "size": len(data), "checksum": P.crc32c(data)}
    r = _cli("ls", "cli", "--sidecar", sidecar.socket)
    assert r.returncode == 0 and r.stdout.strip().endswith("cli/a.bin")
    r = _cli("get", "cli/a.bin", str(tmp_path / "b.bin"), env={"SHMPIPE_SIDECAR_SOCKET": sidecar.socket})
    assert r.returncode == 0 and "checksum verified" in r.stdout and (tmp_path / "b.bin").read_bytes() == data
    r = _cli("--json", "rm", "cli/a.bin", "--sidecar", sidecar.socket)
    assert r.returncode == 0 and json.loads(r.stdout) == {"key": "cli/a.bin", "deleted": True}
    r = _cli("get", "cli/a.bin", str(tmp_path / "c.bin"), "--sidecar", sidecar.socket)
    assert r.returncode == 1 and "SHMPIPE_E_NOT_FOUND" in r.stderr
    assert _cli("frob", "--sidecar", sidecar.socket).returncode == 2
    assert _cli("ls", env={"SHMPIPE_SIDECAR_SOCKET": ""}).returncode == 2
    r = _cli("rm", "a//b", "--sidecar", sidecar.socket)
    assert r.returncode == 2 and "SHMPIPE_E_INVALID_ARGUMENT" in r.stderr


def test_streaming_writer_refused_when_a_part_could_take_every_slot(sidecar, tmp_path):
    # 8 slots of 64 KiB, a part of 8 MiB: a writer's partial part would pin every slot (deadlock).
    with Client(sidecar.socket, slot_count=8, slot_size=65536) as c:
        w = c.open_write("k")
        with pytest.raises(ShmpipeError) as e:
            w.write(b"x" * 100_000)
        assert e.value.code == E.INVALID_ARGUMENT and "pins up to 128 slots" in str(e.value)
        w.abort()
        src = tmp_path / "f"
        src.write_bytes(b"y" * 100_000)
        with pytest.raises(ShmpipeError) as e:
            c.put_file(str(src), "k")
        assert e.value.code == E.INVALID_ARGUMENT


def test_put_of_a_full_slot(sidecar):
    # No room for the key after the data: the put goes as a one-WRITE streaming upload.
    with Client(sidecar.socket, slot_count=16, slot_size=1 << 20) as c:
        s = c.alloc()
        data = os.urandom(len(s))
        s.buffer[:] = data
        assert c.put("full", s, len(data))["size"] == len(data)
        with c.open_read("full") as rs:
            assert rs.read_all() == data
