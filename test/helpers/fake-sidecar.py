#!/usr/bin/env python3
"""A fake sidecar for the client tests: it does the handshake of SPEC §10 and nothing else.

The test (test/helpers/fake-sidecar.js) prepares the segment file and the welcome; this process
listens on the socket, answers one client's hello with the welcome and the three fds
[segment, sq_doorbell, cq_doorbell] (SCM_RIGHTS, which Node cannot send), and then does only
what the test tells it on stdin, one command a line:
  ring            ring the cq doorbell (wakes the client)
  frame <json>    send a control frame
  hangup          close the control socket (EOF for the client)
It reports on stdout, one line each: `listening`, `connected <hello json>`, `mapped`, `eof`,
`sq` (the client rang the sq doorbell). Everything in the segment (rings, entries, heartbeat)
the test writes itself, through the client's own mapping. Python 3.9+, stdlib only.
"""
import json
import os
import selectors
import socket
import struct
import sys


def eventfd():
    if hasattr(os, "eventfd"):
        fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        return fd, fd
    r, w = os.pipe()  # the portable doorbell of SPEC §1
    os.set_blocking(r, False)
    return r, w


def say(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def frame(obj):
    body = json.dumps(obj).encode()
    return struct.pack("<I", len(body)) + body


def read_frame(conn):
    head = b""
    while len(head) < 4:
        chunk = conn.recv(4 - len(head))
        if not chunk:
            return None
        head += chunk
    (n,) = struct.unpack("<I", head)
    body = b""
    while len(body) < n:
        chunk = conn.recv(n - len(body))
        if not chunk:
            return None
        body += chunk
    return json.loads(body)


def main():
    socket_path, segment_path, welcome_json = sys.argv[1], sys.argv[2], sys.argv[3]
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(socket_path)
    listener.listen(4)
    say("listening")
    conn, _ = listener.accept()
    hello = read_frame(conn)
    say("connected " + json.dumps(hello))
    seg = os.open(segment_path, os.O_RDWR | os.O_CLOEXEC)
    sq_read, sq_write = eventfd()
    cq_read, cq_write = eventfd()
    socket.send_fds(conn, [frame(json.loads(welcome_json))], [seg, sq_write, cq_read])
    os.close(seg)

    sel = selectors.DefaultSelector()
    sel.register(sys.stdin, selectors.EVENT_READ, "stdin")
    sel.register(conn, selectors.EVENT_READ, "conn")
    sel.register(sq_read, selectors.EVENT_READ, "sq")
    pending = b""
    while True:
        for key, _ in sel.select():
            if key.data == "stdin":
                line = sys.stdin.readline()
                if not line:
                    return
                cmd, _, arg = line.strip().partition(" ")
                if cmd == "ring":
                    os.write(cq_write, struct.pack("<Q", 1))
                elif cmd == "frame":
                    conn.sendall(frame(json.loads(arg)))
                elif cmd == "hangup":
                    sel.unregister(conn)
                    conn.close()
                say("done " + cmd)
            elif key.data == "conn":
                chunk = conn.recv(65536)
                if not chunk:
                    say("eof")
                    sel.unregister(conn)
                    continue
                pending += chunk
                while len(pending) >= 4:
                    (n,) = struct.unpack("<I", pending[:4])
                    if len(pending) < 4 + n:
                        break
                    msg = json.loads(pending[4 : 4 + n])
                    pending = pending[4 + n :]
                    say(msg.get("type", "?"))
            else:
                try:
                    os.read(sq_read, 8)
                except BlockingIOError:
                    pass
                say("sq")


if __name__ == "__main__":
    main()
