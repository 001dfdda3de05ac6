#!/usr/bin/env python3
"""Idle-client memory of mongolb: opens N connections, sends hello on each and reads the reply,
holds them, and prints mongolb's RSS before, with the clients connected, and after they left.

    idle_clients.py --port P --pid PID [--clients 10000]

It measures what issue 12 asks of idle clients: each connected client after its handshake costs
only what it must. RSS is read from /proc/PID/status (VmRSS), which does not depend on load.
"""
import argparse
import resource
import socket
import struct
import sys
import time

import bson  # PyMongo's bson, from /usr/bin/python3


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


def hello_frame(req_id):
    body = bson.BSON.encode({"hello": 1, "$db": "admin"})
    payload = struct.pack("<I", 0) + b"\x00" + body
    return struct.pack("<iiii", 16 + len(payload), req_id, 0, 2013) + payload


def read_reply(s):
    hdr = b""
    while len(hdr) < 16:
        chunk = s.recv(16 - len(hdr))
        if not chunk:
            raise ConnectionError("closed")
        hdr += chunk
    n = struct.unpack("<i", hdr[:4])[0]
    left = n - 16
    while left > 0:
        chunk = s.recv(min(left, 65536))
        if not chunk:
            raise ConnectionError("closed")
        left -= len(chunk)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--clients", type=int, default=10000)
    ap.add_argument("--settle", type=float, default=1.0)
    a = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, a.clients + 100)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    time.sleep(a.settle)
    before = rss_kb(a.pid)
    socks = []
    batch = 200
    for i in range(0, a.clients, batch):
        group = []
        for j in range(i, min(i + batch, a.clients)):
            s = socket.create_connection((a.host, a.port))
            s.sendall(hello_frame(j + 1))
            group.append(s)
        for s in group:
            read_reply(s)
        socks.extend(group)
    time.sleep(a.settle)
    during = rss_kb(a.pid)
    for s in socks:
        s.close()
    socks = []
    time.sleep(a.settle * 2)
    after = rss_kb(a.pid)
    per = (during - before) * 1024 / max(a.clients, 1)
    print(f"idle clients: {a.clients}; mongolb RSS before {before/1024:.1f} MB, "
          f"with them {during/1024:.1f} MB (+{(during-before)/1024:.1f} MB, {per:.0f} B each), "
          f"after they left {after/1024:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
