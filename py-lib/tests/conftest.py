import os
import sys

# The package under test is this checkout's py-lib, whatever is installed.
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


class Sidecar:
    """The real sidecar binary on a socket in a fresh temp directory (as test/helpers/sidecar.js)."""

    def __init__(self, env=None):
        bin_ = os.environ.get("SHMPIPE_SIDECAR_BIN") or os.path.join(ROOT, "target", "release", "shmpipe-sidecar")
        if not os.path.exists(bin_):
            raise RuntimeError(f"{bin_} is missing: run `cargo build --release -p shmpipe-sidecar` (or npm run build) first")
        self.dir = tempfile.mkdtemp(prefix="shmpipe-py-test-")
        self.socket = os.path.join(self.dir, "sidecar.sock")
        e = {"PATH": os.environ.get("PATH", ""), "SHMPIPE_SOCKET": self.socket, "SHMPIPE_LOG": "warn",
             "SHMPIPE_SHUTDOWN_GRACE": "2", "SHMPIPE_ADMIN_ADDR": "off",
             "SHMPIPE_STORE": f"file://{self.dir}/store", **(env or {})}
        self.proc = subprocess.Popen([bin_], env=e, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        deadline = time.monotonic() + 15
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the sidecar exited early: {self.proc.stderr.read().decode()}")
            try:
                s = socket.socket(socket.AF_UNIX)
                s.connect(self.socket)
                s.close()
                break
            except OSError:
                s.close()
            if time.monotonic() > deadline:
                self.proc.kill()
                raise RuntimeError("the sidecar did not listen within 15 s")
            time.sleep(0.02)

    def kill(self):
        self.proc.kill()
        self.proc.wait(10)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stderr.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def sidecar():
    s = Sidecar()
    yield s
    s.stop()


def wait_for(cond, timeout=5.0, what="a condition"):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout} s for {what}")
        time.sleep(0.005)
