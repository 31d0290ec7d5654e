#!/usr/bin/env python3
"""Runs moto's S3 server on 127.0.0.1 for shmpipe-store's S3 tests.

Usage: s3_server.py [--port N]   (0 or absent: a free port)

Prints "READY <port>" on stdout once the server answers HTTP, then serves until its stdin
closes -- the test holds the write end, so the server also goes away when the test process
dies, even by SIGKILL. Tests that need to kill the server mid-upload send it SIGKILL.
moto keeps everything in memory: a restarted server starts with no buckets.
"""
import argparse
import logging
import sys
import time
import urllib.error
import urllib.request

from moto.server import ThreadedMotoServer


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args()
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=args.port, verbose=False)
    server.start()
    _, port = server.get_host_and_port()

    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2).read()
            break
        except urllib.error.HTTPError:
            break  # any HTTP answer means it is serving
        except OSError as e:
            if time.monotonic() > deadline:
                print(f"moto did not answer on port {port}: {e}", file=sys.stderr)
                return 1
            time.sleep(0.05)

    print(f"READY {port}", flush=True)
    sys.stdin.read()  # until EOF: the test finished or died
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
