"""mongosim's users, SCRAM and authorization, checked with PyMongo 3.11 connecting DIRECTLY to the
simulator (no mongolb): the backend side of mongolb's authentication must be a server that real
drivers accept before the proxy is tested against it.

The raw-socket tests below speak SCRAM themselves, with hashlib and hmac only (not PyMongo's SCRAM,
not mongolb's src/scram.c), to see what no driver shows: the extra empty step without
skipEmptyExchange, the ProtocolError cases, and a session of one user used by another.
"""

import base64
import hashlib
import hmac
import os
import struct
import subprocess

import pymongo
import pytest
from bson.binary import Binary
from bson.int64 import Int64
from pymongo.errors import OperationFailure

from harness import (DEFAULT_BINARY, OP_GET_MORE, OP_KILL_CURSORS, connect, frame, parse_reply,
                     recv_frame, recv_msg, send_msg, start_sim)
from tls_certs import tls_certs  # noqa: F401 (a pytest fixture)

ROOT_USER, ROOT_PWD = "admin", "s3cret"


def auth_sim(*extra, mode=("--standalone",), **kw):
    return start_sim(*mode, "--auth", "--auth-user", "%s:%s" % (ROOT_USER, ROOT_PWD), *extra, **kw)


def client(sim, user=None, pwd=None, i=0, **kw):
    host, port = sim.host_port(i)
    kw.setdefault("serverSelectionTimeoutMS", 5000)
    if user is not None:
        kw["username"], kw["password"] = user, pwd
    return pymongo.MongoClient(host, port, directConnection=True, **kw)


def auth_stats(sim, i=0):
    """simStats' login counters of server i."""
    return sim.stats()["servers"][i]["auth"]


def root(sim, i=0):
    return client(sim, ROOT_USER, ROOT_PWD, i)


# --- a SCRAM client of the test's own, on a raw socket ----------------------------------------


class Raw:
    """One raw connection: commands as dicts, replies as dicts."""

    def __init__(self, sim, i=0):
        self.sock = connect(sim.host_port(i))
        self.rid = 0

    def cmd(self, doc, db="admin"):
        self.rid += 1
        d = dict(doc)
        d["$db"] = db
        send_msg(self.sock, d, request_id=self.rid)
        return recv_msg(self.sock)[1]

    def close(self):
        self.sock.close()


def scram_keys(mech, user, pwd, salt, iterations):
    if mech == "SCRAM-SHA-1":
        h, secret = "sha1", hashlib.md5(("%s:mongo:%s" % (user, pwd)).encode()).hexdigest()
    else:
        h, secret = "sha256", pwd
    salted = hashlib.pbkdf2_hmac(h, secret.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", h).digest()
    stored = hashlib.new(h, client_key).digest()
    server = hmac.new(salted, b"Server Key", h).digest()
    return h, client_key, stored, server


def raw_login(raw, user, pwd, db="admin", mech="SCRAM-SHA-256", skip_empty=True):
    """Runs the whole conversation; returns the list of replies (the last one says done)."""
    cnonce = base64.b64encode(os.urandom(18)).decode()
    first_bare = "n=%s,r=%s" % (user, cnonce)
    start = {"saslStart": 1, "mechanism": mech, "payload": Binary(("n,," + first_bare).encode())}
    if skip_empty:
        start["options"] = {"skipEmptyExchange": True}
    r1 = raw.cmd(start, db)
    if r1.get("ok") != 1:
        return [r1]
    server_first = bytes(r1["payload"]).decode()
    fields = dict(kv.split("=", 1) for kv in server_first.split(","))
    assert fields["r"].startswith(cnonce)
    h, client_key, _, server_key = scram_keys(mech, user, pwd, base64.b64decode(fields["s"]),
                                              int(fields["i"]))
    without_proof = "c=biws,r=%s" % fields["r"]
    auth_msg = ",".join([first_bare, server_first, without_proof]).encode()
    stored = hashlib.new(h, client_key).digest()
    sig = hmac.new(stored, auth_msg, h).digest()
    proof = bytes(a ^ b for a, b in zip(client_key, sig))
    final = "%s,p=%s" % (without_proof, base64.b64encode(proof).decode())
    r2 = raw.cmd({"saslContinue": 1, "conversationId": r1["conversationId"],
                  "payload": Binary(final.encode())}, db)
    replies = [r1, r2]
    if r2.get("ok") != 1:
        return replies
    want = "v=" + base64.b64encode(hmac.new(server_key, auth_msg, h).digest()).decode()
    assert bytes(r2["payload"]).decode() == want
    if not r2["done"]:
        replies.append(raw.cmd({"saslContinue": 1, "conversationId": r1["conversationId"],
                                "payload": Binary(b"")}, db))
    return replies


# --- logging in -----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", [("--standalone",), ("--mongos", "2"),
                                  ("--replset", "rs0", "--members", "2")])
@pytest.mark.parametrize("mech", ["SCRAM-SHA-256", "SCRAM-SHA-1", None])
def test_pymongo_logs_in_with_each_mechanism_in_every_mode(mode, mech):
    with auth_sim(mode=mode) as sim:
        kw = {"authMechanism": mech} if mech else {}
        for i in range(len(sim.servers)):
            c = client(sim, ROOT_USER, ROOT_PWD, i, **kw)
            try:
                st = c.admin.command("connectionStatus")["authInfo"]
                assert st["authenticatedUsers"] == [{"user": ROOT_USER, "db": "admin"}]
                assert st["authenticatedUserRoles"] == [{"role": "root", "db": "admin"}]
                c.test.c.find_one()
            finally:
                c.close()
        assert sum(auth_stats(sim, i)["successes"] for i in range(len(sim.servers))) >= 1


def test_auth_source_names_the_users_database():
    with auth_sim("--auth-user", "app@test:apw:readWrite@test") as sim:
        c = client(sim, "app", "apw", authSource="test")
        c.test.c.insert_one({"_id": 1})
        assert c.test.c.find_one() == {"_id": 1}
        c.close()
        # The same name looked up on admin does not exist.
        c = client(sim, "app", "apw")
        with pytest.raises(OperationFailure) as e:
            c.test.c.find_one()
        assert e.value.code == 18
        c.close()


def test_wrong_password_and_unknown_user_fail_alike():
    with auth_sim() as sim:
        errors = []
        for user, pwd in [(ROOT_USER, "wrong"), ("nobody", "x")]:
            for mech in ["SCRAM-SHA-256", "SCRAM-SHA-1"]:
                c = client(sim, user, pwd, authMechanism=mech)
                with pytest.raises(OperationFailure) as e:
                    c.test.c.find_one()
                errors.append((e.value.code, e.value.details["errmsg"]))
                c.close()
        assert set(errors) == {(18, "Authentication failed.")}
        assert auth_stats(sim)["failures"] >= 4


def test_commands_before_login():
    with auth_sim() as sim:
        c = client(sim)
        for cmd in ["hello", "isMaster", "ping", "buildInfo", "connectionStatus"]:
            assert c.admin.command(cmd)["ok"] == 1
        with pytest.raises(OperationFailure) as e:
            c.test.c.find_one()
        assert e.value.code == 13
        assert e.value.details["errmsg"] == "Command find requires authentication"
        assert e.value.details["codeName"] == "Unauthorized"
        with pytest.raises(OperationFailure) as e:
            c.test.c.insert_one({})
        assert e.value.code == 13
        with pytest.raises(OperationFailure) as e:
            c.admin.command("listDatabases")
        assert e.value.code == 13
        # The harness's control commands stay open.
        assert auth_stats(sim)["unauthorized"] >= 3
        c.close()


def test_without_auth_users_can_log_in_and_nothing_is_enforced():
    with start_sim("--standalone", "--auth-user", "u:p:read@test") as sim:
        c = client(sim)
        c.test.c.insert_one({"x": 1})
        c.close()
        c = client(sim, "u", "p")
        c.test.c.insert_one({"x": 2})  # read only, but authorization is off
        assert c.admin.command("connectionStatus")["authInfo"]["authenticatedUsers"] == [
            {"user": "u", "db": "admin"}]
        c.close()


def test_localhost_exception_creates_the_first_user_only():
    with start_sim("--standalone", "--auth") as sim:
        c = client(sim)
        c.admin.command("createUser", "first", pwd="pw", roles=["root"])
        with pytest.raises(OperationFailure) as e:
            c.admin.command("createUser", "second", pwd="pw", roles=["root"])
        assert e.value.code == 13
        c.close()
        c = client(sim, "first", "pw")
        c.admin.command("createUser", "second", pwd="pw", roles=["root"])
        c.close()


# --- the conversation, step by step ---------------------------------------------------------


@pytest.mark.parametrize("mech", ["SCRAM-SHA-256", "SCRAM-SHA-1"])
def test_raw_conversation_with_and_without_the_empty_exchange(mech):
    with auth_sim() as sim:
        raw = Raw(sim)
        replies = raw_login(raw, ROOT_USER, ROOT_PWD, mech=mech, skip_empty=True)
        assert [r["done"] for r in replies] == [False, True]
        assert all(r["conversationId"] == 1 for r in replies)
        raw.close()
        raw = Raw(sim)
        replies = raw_login(raw, ROOT_USER, ROOT_PWD, mech=mech, skip_empty=False)
        assert [r["done"] for r in replies] == [False, False, True]
        assert bytes(replies[2]["payload"]) == b""
        assert raw.cmd({"find": "c"}, "test")["ok"] == 1
        raw.close()


def test_raw_protocol_errors():
    with auth_sim() as sim:
        raw = Raw(sim)
        r = raw.cmd({"saslContinue": 1, "conversationId": 1, "payload": Binary(b"x")})
        assert (r["ok"], r["code"], r["codeName"]) == (0, 17, "ProtocolError")
        r = raw.cmd({"saslStart": 1, "mechanism": "PLAIN", "payload": Binary(b"\0u\0p")})
        assert (r["code"], r["codeName"]) == (334, "MechanismUnavailable")
        assert r["errmsg"] == "Received authentication for mechanism PLAIN which is not enabled"
        # A malformed client-first: mongod turns it into AuthenticationFailed.
        r = raw.cmd({"saslStart": 1, "mechanism": "SCRAM-SHA-256", "payload": Binary(b"bogus")})
        assert (r["code"], r["errmsg"]) == (18, "Authentication failed.")
        # A mismatched conversationId ends the conversation.
        r = raw.cmd({"saslStart": 1, "mechanism": "SCRAM-SHA-256",
                     "payload": Binary(b"n,,n=admin,r=abcdefgh")})
        assert r["ok"] == 1
        r = raw.cmd({"saslContinue": 1, "conversationId": 7, "payload": Binary(b"c=biws")})
        assert r["code"] == 17
        # A proof for another nonce fails.
        r = raw.cmd({"saslStart": 1, "mechanism": "SCRAM-SHA-256",
                     "payload": Binary(b"n,,n=admin,r=abcdefgh")})
        r = raw.cmd({"saslContinue": 1, "conversationId": 1,
                     "payload": Binary(b"c=biws,r=abcdefghXYZ,p=" +
                                       base64.b64encode(b"\0" * 32))})
        assert (r["code"], r["errmsg"]) == (18, "Authentication failed.")
        assert raw.cmd({"find": "c"}, "test")["code"] == 13
        raw.close()


def test_hello_answers_sasl_supported_mechs_and_speculative_authenticate():
    with auth_sim("--auth-user", "app@test:pw:read@test") as sim:
        raw = Raw(sim)
        assert raw.cmd({"createUser": "x", "pwd": "y", "roles": []})["code"] == 13
        h = raw.cmd({"hello": 1, "saslSupportedMechs": "test.app"})
        assert h["saslSupportedMechs"] == ["SCRAM-SHA-1", "SCRAM-SHA-256"]
        h = raw.cmd({"hello": 1, "saslSupportedMechs": "admin.app"})
        assert "saslSupportedMechs" not in h
        spec = {"saslStart": 1, "mechanism": "SCRAM-SHA-256", "db": "test",
                "payload": Binary(b"n,,n=app,r=0123456789abcdef"),
                "options": {"skipEmptyExchange": True}}
        h = raw.cmd({"hello": 1, "speculativeAuthenticate": spec})
        sa = h["speculativeAuthenticate"]
        assert sa["conversationId"] == 1 and sa["done"] is False
        assert bytes(sa["payload"]).startswith(b"r=0123456789abcdef")
        # An unknown user: the field is left out and the driver falls back to saslStart.
        spec["payload"] = Binary(b"n,,n=ghost,r=0123456789abcdef")
        h = raw.cmd({"hello": 1, "speculativeAuthenticate": spec})
        assert "speculativeAuthenticate" not in h
        raw.close()
        assert auth_stats(sim)["speculative"] == 1


def test_one_user_per_connection_and_logout():
    with auth_sim("--auth-user", "other:pw:read@test") as sim:
        raw = Raw(sim)
        assert raw_login(raw, ROOT_USER, ROOT_PWD)[-1]["done"] is True
        # Logging in again as the same user is allowed; as another one is not (mongod 6.0+).
        assert raw_login(raw, ROOT_USER, ROOT_PWD)[-1]["done"] is True
        r = raw_login(raw, "other", "pw")[-1]
        assert (r["ok"], r["code"]) == (0, 18)
        assert raw.cmd({"logout": 1})["ok"] == 1
        st = raw.cmd({"connectionStatus": 1})["authInfo"]
        assert st["authenticatedUsers"] == [] and st["authenticatedUserRoles"] == []
        assert raw.cmd({"find": "c"}, "test")["code"] == 13
        assert raw_login(raw, "other", "pw")[-1]["done"] is True
        assert raw.cmd({"find": "c"}, "test")["ok"] == 1
        raw.close()


# --- users --------------------------------------------------------------------------------------


def test_user_commands_and_show_credentials():
    with auth_sim() as sim:
        c = root(sim)
        c.test.command("createUser", "u1", pwd="pw1", roles=["read", {"role": "readWrite",
                                                                        "db": "other"}])
        c.test.command("createUser", "u2", pwd="pw2", roles=[], mechanisms=["SCRAM-SHA-256"])
        with pytest.raises(OperationFailure) as e:
            c.test.command("createUser", "u1", pwd="pw", roles=[])
        assert e.value.code == 51003
        with pytest.raises(OperationFailure) as e:
            c.test.command("createUser", "u3", pwd="pw", roles=["root"])
        assert e.value.code == 31  # root exists on admin only

        info = c.test.command("usersInfo", "u1")["users"]
        assert len(info) == 1
        u = info[0]
        assert (u["_id"], u["user"], u["db"]) == ("test.u1", "u1", "test")
        assert u["roles"] == [{"role": "read", "db": "test"}, {"role": "readWrite", "db": "other"}]
        assert u["mechanisms"] == ["SCRAM-SHA-1", "SCRAM-SHA-256"]
        assert "credentials" not in u
        assert c.test.command("usersInfo", {"user": "u2", "db": "test"})["users"][0][
            "mechanisms"] == ["SCRAM-SHA-256"]
        assert {x["user"] for x in c.test.command("usersInfo", 1)["users"]} == {"u1", "u2"}
        everyone = c.admin.command("usersInfo", {"forAllDBs": True})["users"]
        assert {x["_id"] for x in everyone} == {"admin.admin", "test.u1", "test.u2"}

        # The verifiers, checked against a derivation of the test's own (hashlib).
        creds = c.test.command("usersInfo", "u1", showCredentials=True)["users"][0]["credentials"]
        for mech, iters, salt_len in [("SCRAM-SHA-1", 10000, 16), ("SCRAM-SHA-256", 15000, 28)]:
            cr = creds[mech]
            assert cr["iterationCount"] == iters
            salt = base64.b64decode(cr["salt"])
            assert len(salt) == salt_len
            _, _, stored, server = scram_keys(mech, "u1", "pw1", salt, iters)
            assert base64.b64decode(cr["storedKey"]) == stored
            assert base64.b64decode(cr["serverKey"]) == server
        # Salts are random: two users with one password get different verifiers.
        c.test.command("createUser", "twin", pwd="pw1", roles=[])
        twin = c.test.command("usersInfo", "twin", showCredentials=True)["users"][0]["credentials"]
        assert twin["SCRAM-SHA-256"]["salt"] != creds["SCRAM-SHA-256"]["salt"]

        # A password change regenerates the credentials: the old password stops working.
        c.test.command("updateUser", "u1", pwd="new")
        again = c.test.command("usersInfo", "u1", showCredentials=True)["users"][0]["credentials"]
        assert again["SCRAM-SHA-256"]["storedKey"] != creds["SCRAM-SHA-256"]["storedKey"]
        old = client(sim, "u1", "pw1", authSource="test")
        with pytest.raises(OperationFailure) as e:
            old.test.c.find_one()
        assert e.value.code == 18
        old.close()
        new = client(sim, "u1", "new", authSource="test")
        new.test.c.find_one()
        # One may always look at oneself, without credentials... unless asked and allowed.
        assert new.test.command("usersInfo", "u1")["users"][0]["user"] == "u1"
        with pytest.raises(OperationFailure) as e:
            new.test.command("usersInfo", "u2")
        assert e.value.code == 13
        new.close()

        c.test.command("updateUser", "u1", roles=["readWrite"])
        assert c.test.command("usersInfo", "u1")["users"][0]["roles"] == [
            {"role": "readWrite", "db": "test"}]
        c.test.command("dropUser", "u1")
        assert c.test.command("usersInfo", "u1")["users"] == []
        with pytest.raises(OperationFailure) as e:
            c.test.command("dropUser", "u1")
        assert e.value.code == 11
        with pytest.raises(OperationFailure) as e:
            c.test.command("updateUser", "u1", pwd="x")
        assert e.value.code == 11
        c.close()


def test_sha256_only_user_negotiates_and_refuses_sha1():
    with auth_sim() as sim:
        c = root(sim)
        c.admin.command("createUser", "modern", pwd="pw", roles=["root"],
                        mechanisms=["SCRAM-SHA-256"])
        c.close()
        c = client(sim, "modern", "pw")  # PyMongo asks saslSupportedMechs and picks SHA-256
        c.test.c.find_one()
        c.close()
        c = client(sim, "modern", "pw", authMechanism="SCRAM-SHA-1")
        with pytest.raises(OperationFailure) as e:
            c.test.c.find_one()
        assert e.value.code == 334
        c.close()


def test_users_are_shared_by_every_server():
    with auth_sim(mode=("--mongos", "3")) as sim:
        c = root(sim, 0)
        c.admin.command("createUser", "late", pwd="pw", roles=["readWrite"])
        c.close()
        for i in (1, 2):
            c = client(sim, "late", "pw", i)
            c.admin.command("ping")
            c.close()
    with auth_sim(mode=("--replset", "rs0", "--members", "3")) as sim:
        c = root(sim, 0)
        c.test.command("createUser", "late", pwd="pw", roles=["read"])
        c.close()
        c = client(sim, "late", "pw", 2, authSource="test", readPreference="secondary")
        c.test.c.find_one()
        c.close()


# --- roles ------------------------------------------------------------------------------------


def test_roles_are_enforced_per_database():
    users = ["reader:pw:read@test", "writer:pw:readWrite@test", "owner:pw:dbOwner@test",
             "uadmin:pw:userAdminAnyDatabase", "monitor:pw:clusterMonitor"]
    args = []
    for u in users:
        args += ["--auth-user", u]
    with auth_sim(*args) as sim:
        r, w = client(sim, "reader", "pw"), client(sim, "writer", "pw")
        w.test.c.insert_many([{"_id": i} for i in range(5)])
        assert len(list(r.test.c.find())) == 5
        assert r.test.command("count", "c")["n"] == 5
        assert r.test.c.distinct("_id") == list(range(5))
        with pytest.raises(OperationFailure) as e:
            r.test.c.insert_one({"_id": 99})
        assert e.value.code == 13
        assert e.value.details["errmsg"].startswith("not authorized on test to execute command {")
        for op in [lambda: r.test.c.update_one({"_id": 1}, {"$set": {"a": 1}}),
                   lambda: r.test.c.delete_one({"_id": 1}),
                   lambda: r.test.c.drop(),
                   lambda: r.test.command("aggregate", "c", pipeline=[{"$out": "d"}], cursor={})]:
            with pytest.raises(OperationFailure) as e:
                op()
            assert e.value.code == 13
        with pytest.raises(OperationFailure) as e:
            r.other.c.find_one()  # read on test only
        assert e.value.code == 13
        with pytest.raises(OperationFailure) as e:
            r.admin.command("serverStatus")
        assert e.value.code == 13
        with pytest.raises(OperationFailure) as e:
            w.test.command("createUser", "x", pwd="y", roles=[])
        assert e.value.code == 13
        w.test.c.update_one({"_id": 1}, {"$set": {"a": 1}})
        w.test.c.delete_one({"_id": 2})

        o = client(sim, "owner", "pw")
        o.test.command("createUser", "fromowner", pwd="pw", roles=["read"])
        o.test.c.insert_one({"_id": 100})
        with pytest.raises(OperationFailure) as e:
            o.other.command("createUser", "x", pwd="y", roles=[])
        assert e.value.code == 13

        ua = client(sim, "uadmin", "pw")
        creds = ua.test.command("usersInfo", "fromowner", showCredentials=True)["users"][0]
        assert set(creds["credentials"]) == {"SCRAM-SHA-1", "SCRAM-SHA-256"}
        with pytest.raises(OperationFailure) as e:
            ua.test.c.find_one()
        assert e.value.code == 13

        m = client(sim, "monitor", "pw")
        assert m.admin.command("serverStatus")["ok"] == 1
        with pytest.raises(OperationFailure) as e:
            m.test.c.find_one()
        assert e.value.code == 13
        for x in (r, w, o, ua, m):
            x.close()


# --- ownership ---------------------------------------------------------------------------------


def test_cursors_belong_to_their_user():
    with auth_sim("--auth-user", "a:pw:read@test", "--auth-user", "b:pw:read@test") as sim:
        rc = root(sim)
        rc.test.c.insert_many([{"_id": i} for i in range(10)])
        a, b = client(sim, "a", "pw"), client(sim, "b", "pw")
        res = a.test.command("find", "c", batchSize=2)
        cid = res["cursor"]["id"]
        assert cid != 0
        with pytest.raises(OperationFailure) as e:
            b.test.command("getMore", Int64(cid), collection="c")
        assert e.value.code == 13
        assert e.value.details["errmsg"] == (
            "cursor id %d was not created by the authenticated user" % cid)
        with pytest.raises(OperationFailure) as e:
            b.test.command("killCursors", "c", cursors=[Int64(cid)])
        assert e.value.code == 13
        assert e.value.details["errmsg"] == "not authorized to kill cursor on test.c"
        # Nothing was killed: the owner goes on.
        more = a.test.command("getMore", Int64(cid), collection="c", batchSize=2)
        assert [d["_id"] for d in more["cursor"]["nextBatch"]] == [2, 3]
        # root may kill any cursor (killAnyCursor).
        killed = rc.test.command("killCursors", "c", cursors=[Int64(cid)])
        assert killed["cursorsKilled"] == [cid]
        for x in (rc, a, b):
            x.close()


def test_legacy_get_more_and_kill_cursors_respect_the_owner():
    # MongoDB 4.4 still takes OP_GET_MORE and OP_KILL_CURSORS: the owner rule holds there too.
    with auth_sim("--version", "4.4", "--auth-user", "a:pw:read@test",
                  "--auth-user", "b:pw:read@test") as sim:
        rc = root(sim)
        rc.test.w.insert_many([{"_id": i} for i in range(10)])
        rc.close()
        ra, rb = Raw(sim), Raw(sim)
        assert raw_login(ra, "a", "pw")[-1]["done"] and raw_login(rb, "b", "pw")[-1]["done"]
        cid = ra.cmd({"find": "w", "batchSize": 2}, "test")["cursor"]["id"]

        def legacy_get_more(raw, rid):
            raw.sock.sendall(frame(OP_GET_MORE, struct.pack("<i", 0) + b"test.w\x00" +
                                   struct.pack("<iq", 2, cid), rid))
            hdr, body = recv_frame(raw.sock)
            return parse_reply(body)

        flags, _, _, docs = legacy_get_more(rb, 100)
        assert flags & 2 and docs[0]["code"] == 13  # QueryFailure
        # b's OP_KILL_CURSORS is ignored; a's cursor lives on.
        rb.sock.sendall(frame(OP_KILL_CURSORS, struct.pack("<iiq", 0, 1, cid), 101))
        flags, rcid, start, docs = legacy_get_more(ra, 102)
        assert flags == 0 and rcid == cid and [d["_id"] for d in docs] == [2, 3]
        ra.close()
        rb.close()


def test_sessions_belong_to_their_user():
    with auth_sim("--auth-user", "a:pw:readWrite@test", "--auth-user", "b:pw:readWrite@test",
                  mode=("--replset", "rs0", "--members", "1")) as sim:
        ra, rb = Raw(sim), Raw(sim)
        assert raw_login(ra, "a", "pw")[-1]["done"] and raw_login(rb, "b", "pw")[-1]["done"]
        lsid = {"id": Binary(os.urandom(16), 4)}
        r = ra.cmd({"insert": "t", "documents": [{"_id": 1}], "lsid": lsid,
                    "txnNumber": Int64(1), "startTransaction": True, "autocommit": False},
                   "test")
        assert r["ok"] == 1
        # b names a's session id: to the server that is another session, with no transaction.
        r = rb.cmd({"insert": "t", "documents": [{"_id": 2}], "lsid": lsid,
                    "txnNumber": Int64(1), "autocommit": False}, "test")
        assert (r["ok"], r["code"]) == (0, 251)
        r = rb.cmd({"commitTransaction": 1, "lsid": lsid, "txnNumber": Int64(1),
                    "autocommit": False})
        assert r["ok"] == 0
        r = ra.cmd({"commitTransaction": 1, "lsid": lsid, "txnNumber": Int64(1),
                    "autocommit": False})
        assert r["ok"] == 1
        ra.close()
        rb.close()


def test_help_lists_the_auth_flags():
    out = subprocess.run([os.environ.get("MONGOSIM", DEFAULT_BINARY), "--help"],
                         capture_output=True, text=True).stdout
    assert "--auth " in out and "--auth-user" in out


def test_bad_auth_user_is_refused_without_echoing_the_password():
    p = subprocess.run([os.environ.get("MONGOSIM", DEFAULT_BINARY), "--standalone", "--port", "0",
                        "--auth-user", "nopassword"], capture_output=True, text=True, timeout=10)
    assert p.returncode == 2
    p = subprocess.run([os.environ.get("MONGOSIM", DEFAULT_BINARY), "--standalone", "--port", "0",
                        "--auth-user", "x:topsecret", "--auth-user", "x:topsecret"],
                       capture_output=True, text=True, timeout=10)
    assert p.returncode == 2 and "topsecret" not in p.stderr


# --- MONGODB-X509 ---------------------------------------------------------------------------------


def test_x509_maps_the_client_certificate_to_an_external_user(tls_certs):
    subject = "CN=mongosim-client"
    with auth_sim("--auth-user", subject + "@$external::readWrite@test",
                  "--tls-cert", tls_certs.server, "--tls-ca", tls_certs.ca,
                  tls_ca=tls_certs.ca) as sim:
        host, port = sim.host_port(0)
        tls = dict(tls=True, tlsCAFile=tls_certs.ca, serverSelectionTimeoutMS=5000,
                   directConnection=True)
        c = pymongo.MongoClient(host, port, tlsCertificateKeyFile=tls_certs.client,
                                authMechanism="MONGODB-X509", **tls)
        c.test.c.insert_one({"_id": 1})
        st = c.admin.command("connectionStatus")["authInfo"]
        assert st["authenticatedUsers"] == [{"user": subject, "db": "$external"}]
        assert st["authenticatedUserRoles"] == [{"role": "readWrite", "db": "test"}]
        with pytest.raises(OperationFailure) as e:
            c.other.c.find_one()
        assert e.value.code == 13
        c.close()
        users = root_tls(sim, tls).admin.command("usersInfo", {"forAllDBs": True})["users"]
        assert [u["mechanisms"] for u in users if u["db"] == "$external"] == [["external"]]
        # Without a certificate there is no subject: 18.
        c = pymongo.MongoClient(host, port, authMechanism="MONGODB-X509", username=subject,
                                **tls)
        with pytest.raises(OperationFailure) as e:
            c.test.c.find_one()
        assert e.value.code == 18
        c.close()
        # A password for an $external user is refused.
        r = root_tls(sim, tls)
        with pytest.raises(OperationFailure) as e:
            r["$external"].command("createUser", "CN=x", pwd="p", roles=[])
        assert e.value.code == 2
        # Once the user is gone, the subject is an unknown user: 11 UserNotFound, as mongod.
        r["$external"].command("dropUser", subject)
        r.close()
        c = pymongo.MongoClient(host, port, tlsCertificateKeyFile=tls_certs.client,
                                authMechanism="MONGODB-X509", **tls)
        with pytest.raises(OperationFailure) as e:
            c.test.c.find_one()
        assert e.value.code == 11
        c.close()


def root_tls(sim, tls):
    host, port = sim.host_port(0)
    return pymongo.MongoClient(host, port, username=ROOT_USER, password=ROOT_PWD, **tls)
