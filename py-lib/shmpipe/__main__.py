"""``python -m shmpipe [--sidecar SOCKET] [--json] put KEY FILE | get KEY FILE | ls [PREFIX] | rm KEY``

The example agent of the Python client, with the ``shmpipe`` CLI's output shapes and exit codes
(0 ok, 1 error, 2 usage, 130/143 signals). The socket defaults to $SHMPIPE_SIDECAR_SOCKET; it never
starts a sidecar of its own.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from datetime import datetime, timezone

from . import errors as E
from .client import Client
from .errors import ShmpipeError


class _Usage(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # exit 2 with our wording
        raise _Usage(message)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m shmpipe", description="Move objects to and from a shmpipe sidecar's store.")
    p.add_argument("--sidecar", default=os.environ.get("SHMPIPE_SIDECAR_SOCKET"), help="the sidecar's control socket [default: $SHMPIPE_SIDECAR_SOCKET]")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    s = sub.add_parser("put", help="upload FILE as the object KEY")
    s.add_argument("key")
    s.add_argument("file")
    s = sub.add_parser("get", help="download the object KEY into FILE")
    s.add_argument("key")
    s.add_argument("file")
    s = sub.add_parser("ls", help="list the objects under PREFIX")
    s.add_argument("prefix", nargs="?", default="")
    s = sub.add_parser("rm", help="delete the object KEY")
    s.add_argument("key")
    return p


def main(argv: list[str] | None = None) -> int:
    p = _parser()
    args = list(sys.argv[1:] if argv is None else argv)
    # The global options may also follow the command, as the shmpipe CLI allows: move them first.
    front: list[str] = []
    i = 0
    while i < len(args):
        x = args[i]
        if x == "--":
            break
        if x == "--json" or x.startswith("--sidecar="):
            front.append(args.pop(i))
        elif x == "--sidecar" and i + 1 < len(args):
            front += [args.pop(i), args.pop(i)]
        else:
            i += 1
    try:
        a = p.parse_args(front + args)
    except _Usage as e:
        print(f"python -m shmpipe: {e}", file=sys.stderr)
        p.print_usage(sys.stderr)
        return 2
    if not a.sidecar:
        print("python -m shmpipe: no sidecar: pass --sidecar SOCKET or set SHMPIPE_SIDECAR_SOCKET", file=sys.stderr)
        return 2

    def out(obj: dict, text: str) -> None:
        print(json.dumps(obj) if a.json else text, flush=True)

    def on_term(signum, frame):
        raise SystemExit(143)

    signal.signal(signal.SIGTERM, on_term)
    try:
        with Client(a.sidecar, client_name="python-cli") as c:
            if a.command == "put":
                r = c.put_file(a.file, a.key)
                out({"key": a.key, **r}, f"{a.key}: {r['size']} bytes, crc32c {r['checksum']:08x}")
            elif a.command == "get":
                r = c.get_file(a.key, a.file)
                out({"key": a.key, "file": a.file, **r}, f"{a.file}: {r['size']} bytes" + (", checksum verified" if r["verified"] else ""))
            elif a.command == "ls":
                for e in c.list(a.prefix):
                    when = datetime.fromtimestamp(e["mtime_ms"] / 1000, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
                    out({"key": e["key"], "size": e["size"], "mtimeMs": e["mtime_ms"]}, f"{e['size']:>12}  {when}  {e['key']}")
            elif a.command == "rm":
                c.delete(a.key)
                out({"key": a.key, "deleted": True}, f"deleted {a.key}")
        return 0
    except ShmpipeError as e:
        print(f"python -m shmpipe: {e}", file=sys.stderr)
        return 2 if e.code == E.INVALID_ARGUMENT else 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
