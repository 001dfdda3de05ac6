"""Malformed and oversized frames close only the connection that sent them: mongolb logs and counts
them, and every other client carries on."""

import os
import socket
import struct
import threading

import pymongo

from harness import OP_MSG, closed_by_peer, frame
from mongolb_harness import cluster  # noqa: F401  (cluster is a fixture)


def invalid_bson_doc():
    # Consistent outer length and terminator, but the string element claims 1000 bytes.
    body = b"\x02a\x00" + struct.pack("<i", 1000) + b"x\x00"
    return struct.pack("<i", 4 + len(body) + 1) + body + b"\x00"


BAD_FRAMES = {
    "length below 16": struct.pack("<i", 10) + os.urandom(12),
    "length above 48,000,000": struct.pack("<iiii", 48000001, 1, 0, OP_MSG),
    "OP_MSG with invalid BSON": frame(OP_MSG, struct.pack("<I", 0) + b"\x00" + invalid_bson_doc()),
}


def test_bad_frames_close_only_their_connection(cluster):
    lb = cluster.lb
    client = pymongo.MongoClient(lb.uri, serverSelectionTimeoutMS=5000)
    other = pymongo.MongoClient(lb.uri, serverSelectionTimeoutMS=5000)
    try:
        coll = client.test_frames.c
        coll.drop()  # a real cluster may keep data from an earlier run
        coll.insert_one({"_id": 0})
        other_coll = other.test_frames.c
        assert other_coll.find_one({"_id": 0}) is not None
        before = client.admin.command("mongolbStatus")
        errors, stop = [], threading.Event()

        def busy():  # another well-behaved client keeps working throughout
            n = 0
            while not stop.is_set():
                try:
                    other_coll.update_one({"_id": 0}, {"$inc": {"n": 1}})
                    assert other_coll.find_one({"_id": 0})["n"] == n + 1
                    n += 1
                except Exception as e:  # noqa: BLE001
                    errors.append(repr(e))
                    return

        worker = threading.Thread(target=busy)
        worker.start()
        try:
            for name, data in BAD_FRAMES.items():
                with socket.create_connection((lb.host, lb.port), timeout=5) as s:
                    s.sendall(data)
                    assert closed_by_peer(s, 5.0), "mongolb kept the connection open: " + name
                assert coll.find_one({"_id": 0}) is not None, name
        finally:
            stop.set()
            worker.join(30)
        assert errors == []
        after = client.admin.command("mongolbStatus")
        assert after["counters"]["badFrames"] - before["counters"]["badFrames"] == len(BAD_FRAMES)
        # The driver never had to reconnect: the only new connections were the three bad ones.
        accepted = after["counters"]["clientsAccepted"] - before["counters"]["clientsAccepted"]
        assert accepted == len(BAD_FRAMES)
        assert after["clients"] == before["clients"]
        assert lb.proc.poll() is None
    finally:
        client.close()
        other.close()
