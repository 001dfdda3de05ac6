"""OP_COMPRESSED at the byte level, for tests that send compressed frames by hand: building them
(with a declared size, compressor id or wrapped opcode of the test's choosing) and reading replies
that may come compressed. zlib is always there; snappy and zstd only when python3-snappy and
python3-zstandard are installed (HAVE says which)."""

import struct
import zlib

import bson

from harness import OP_MSG, msg_payload, recv_frame

OP_COMPRESSED = 2012
IDS = {"noop": 0, "snappy": 1, "zlib": 2, "zstd": 3}
NAMES = {v: k for k, v in IDS.items()}

try:
    import snappy  # python3-snappy
except ImportError:  # pragma: no cover - depends on the machine
    snappy = None
try:
    import zstandard  # python3-zstandard
except ImportError:  # pragma: no cover
    zstandard = None

HAVE = {"noop": True, "zlib": True, "snappy": snappy is not None, "zstd": zstandard is not None}


def pack(name, data):
    if name == "noop":
        return data
    if name == "zlib":
        return zlib.compress(data)
    if name == "snappy":
        return snappy.compress(data)
    if name == "zstd":
        return zstandard.ZstdCompressor().compress(data)
    raise ValueError(name)


def unpack(cid, data, size):
    name = NAMES[cid]
    if name == "noop":
        return data
    if name == "zlib":
        return zlib.decompress(data)
    if name == "snappy":
        return snappy.uncompress(data)
    return zstandard.ZstdDecompressor().decompress(data, max_output_size=size)


def compressed(name, opcode, payload, request_id=1, declared=None, cid=None, data=None):
    """An OP_COMPRESSED wrapping payload (the original message without its header)."""
    z = pack(name, payload) if data is None else data
    size = len(payload) if declared is None else declared
    body = struct.pack("<iiB", opcode, size, IDS[name] if cid is None else cid) + z
    return struct.pack("<iiii", 16 + len(body), request_id, 0, OP_COMPRESSED) + body


def compressed_msg(name, doc, request_id=1, **kw):
    return compressed(name, OP_MSG, msg_payload(doc), request_id, **kw)


def recv_any(sock):
    """Reads one reply, decompressing it if it came compressed: (header, doc, compressor name or
    None). The header is the original one (its opcode the wrapped one)."""
    hdr, body = recv_frame(sock)
    name = None
    if hdr[3] == OP_COMPRESSED:
        op, size, cid = struct.unpack("<iiB", body[:9])
        body = unpack(cid, body[9:], size)
        assert len(body) == size
        name = NAMES[cid]
        hdr = (16 + size, hdr[1], hdr[2], op)
    assert hdr[3] == OP_MSG, hdr
    return hdr, bson.BSON(body[5:]).decode(), name
