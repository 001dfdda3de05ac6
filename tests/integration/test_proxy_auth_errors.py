"""The error paths of logins through mongolb (src/auth.c), each checked by what a client or an
operator sees: an error document with its code and message, a refused login, a log line.

Clients that speak SASL wrongly (saslContinue without saslStart or with another conversationId,
an unsupported mechanism, malformed SCRAM messages, a payload missing), the empty last step of a
client that did not ask for skipEmptyExchange, a second login and logout on one connection,
`authenticate` (MONGODB-X509 is not offered to applications), max_cached_users evicting cached
verifiers, service_password_file problems at start, in --check-config and at a reload, and
servers that answer mongolb's own logins and usersInfo reads oddly (scripted fake servers from
fake_server.py, which speak the server side of SCRAM with hashlib).
"""

import base64
import hashlib
import hmac
import os
import struct
import subprocess
import threading

import bson
import pymongo
import pytest
from pymongo.errors import OperationFailure

from fake_server import HELLO_NAMES, FakeServer
from harness import recv_msg, scram_sha256_login, send_msg
from mongolb_harness import free_port, mongolb_binary, run_mongolb_conf, start_mongolb, wait_for
from test_proxy_auth import (ADMIN_PWD, checked, cluster_lines, make_verifier,
                             password_dir, start_auth_sim)

APP_PWD = "app-pw"
OPS_PWD = "ops-pw"


@pytest.fixture(scope="module")
def sim():
    with start_auth_sim(1) as s:
        yield s


@pytest.fixture
def files():
    d, pw = password_dir("mongolb-autherr-")
    path = os.path.join(d, "users.auth")
    with open(path, "w") as f:
        f.write(make_verifier("app@admin", APP_PWD))
        f.write(make_verifier("ops@admin", OPS_PWD))
    os.chmod(path, 0o600)
    return d, pw, path


def service(sim, pw, path, **extra):
    cfg = {"auth.mode": "service", "auth.auth_file": path, "auth.service_user": "admin",
           "auth.service_password_file": pw, "auth.admin_users": "ops@admin"}
    cfg.update(extra)
    return start_mongolb(sim.servers, cfg, admin=("ops", OPS_PWD, "admin"))


def call(sock, doc, db="admin", rid=[100]):  # noqa: B006 (a request id counter on purpose)
    doc = dict(doc)
    doc["$db"] = db
    rid[0] += 1
    send_msg(sock, doc, request_id=rid[0])
    return recv_msg(sock)[1]


# --- a client's side of SCRAM, one step at a time ------------------------------------------------

HASHES = {"SCRAM-SHA-256": hashlib.sha256, "SCRAM-SHA-1": hashlib.sha1}


def salted_password(mech, user, password, salt, iters):
    if mech == "SCRAM-SHA-1":  # MongoDB hashes SHA-1 passwords as md5("user:mongo:password")
        password = hashlib.md5(("%s:mongo:%s" % (user, password)).encode()).hexdigest()
    return hashlib.pbkdf2_hmac(HASHES[mech]().name, password.encode(), salt, iters)


def mac(mech, key, data):
    return hmac.new(key, data, HASHES[mech]).digest()


class ScramClient:
    """The client side of one SCRAM conversation, whose messages the test sends as it likes."""

    def __init__(self, user, password, mech="SCRAM-SHA-256"):
        self.user, self.password, self.mech = user, password, mech
        self.cnonce = base64.b64encode(os.urandom(24)).decode()
        self.first_bare = "n=%s,r=%s" % (user, self.cnonce)

    def first(self):
        return bson.Binary(("n,," + self.first_bare).encode())

    def final(self, server_first):
        server_first = bytes(server_first).decode()
        f = dict(kv.split("=", 1) for kv in server_first.split(","))
        assert f["r"].startswith(self.cnonce)
        salted = salted_password(self.mech, self.user, self.password, base64.b64decode(f["s"]),
                                 int(f["i"]))
        ck = mac(self.mech, salted, b"Client Key")
        without_proof = "c=biws,r=%s" % f["r"]
        am = ",".join((self.first_bare, server_first, without_proof)).encode()
        sig = mac(self.mech, HASHES[self.mech](ck).digest(), am)
        proof = base64.b64encode(bytes(a ^ b for a, b in zip(ck, sig))).decode()
        self.expect = "v=" + base64.b64encode(mac(self.mech, mac(self.mech, salted, b"Server Key"),
                                                  am)).decode()
        return bson.Binary(("%s,p=%s" % (without_proof, proof)).encode())


def sasl_start(sock, sc, skip_empty=True, db="admin"):
    doc = {"saslStart": 1, "mechanism": sc.mech, "payload": sc.first()}
    if skip_empty:
        doc["options"] = {"skipEmptyExchange": True}
    return call(sock, doc, db)


def login(sock, user, password, mech="SCRAM-SHA-256"):
    sc = ScramClient(user, password, mech)
    r = sasl_start(sock, sc)
    assert r["ok"] == 1, r
    r = call(sock, {"saslContinue": 1, "conversationId": r["conversationId"],
                    "payload": sc.final(r["payload"])})
    assert r["ok"] == 1 and r["done"] is True, r
    assert bytes(r["payload"]).decode() == sc.expect


def find(sock, coll="autherr", db="test"):
    return call(sock, {"find": coll, "filter": {}}, db)


def assert_error(r, code, text):
    assert r["ok"] == 0 and r["code"] == code and text in r["errmsg"], r


# --- malformed conversations ---------------------------------------------------------------------


def test_malformed_sasl_conversations(sim, files):
    """Each mistake gets an error document naming it; none logs the client in, none costs the
    connection, and a correct login on the same connection works afterwards."""
    _, pw, path = files
    with checked(service(sim, pw, path)) as lb, lb.connect(login=False) as s:
        # saslContinue with nothing started.
        r = call(s, {"saslContinue": 1, "conversationId": 1, "payload": b"c=biws,r=x,p=AAAA"})
        assert_error(r, 17, "No SASL session state found")
        # A mechanism mongolb does not offer: 334 naming the mechanisms it does.
        r = call(s, {"saslStart": 1, "mechanism": "PLAIN", "payload": b"\x00app\x00app-pw"})
        assert_error(r, 334, "mechanism 'PLAIN' is not available; use SCRAM-SHA-256")
        # A payload of the wrong type is no payload.
        r = call(s, {"saslStart": 1, "mechanism": "SCRAM-SHA-256", "payload": 12})
        assert_error(r, 17, "saslStart without a payload")
        # A client-first message that is not SCRAM.
        r = call(s, {"saslStart": 1, "mechanism": "SCRAM-SHA-256", "payload": b"garbage"})
        assert_error(r, 17, "malformed SCRAM message")
        # Channel binding (p=...) is not supported.
        r = call(s, {"saslStart": 1, "mechanism": "SCRAM-SHA-256",
                     "payload": b"p=tls-unique,,n=app,r=abcdefgh"})
        assert r["ok"] == 0 and r["code"] == 17, r

        # A good start, then a saslContinue naming another conversation: refused, and the
        # conversation that was started goes on.
        sc = ScramClient("app", APP_PWD)
        r = sasl_start(s, sc)
        assert r["ok"] == 1 and r["conversationId"] == 1 and r["done"] is False, r
        first = r["payload"]
        r2 = call(s, {"saslContinue": 1, "conversationId": 2, "payload": sc.final(first)})
        assert_error(r2, 17, "No SASL session state found")
        # A saslContinue without a payload ends the conversation...
        r2 = call(s, {"saslContinue": 1, "conversationId": 1})
        assert_error(r2, 17, "saslContinue without a payload")
        # ...so its proof comes too late.
        r2 = call(s, {"saslContinue": 1, "conversationId": 1, "payload": sc.final(first)})
        assert_error(r2, 17, "No SASL session state found")

        # A client-final message that is not SCRAM.
        sc = ScramClient("app", APP_PWD)
        r = sasl_start(s, sc)
        assert r["ok"] == 1, r
        r = call(s, {"saslContinue": 1, "conversationId": 1, "payload": b"c=biws"})
        assert_error(r, 17, "malformed SCRAM message")

        # Still not logged in; a correct login on the same connection then works.
        assert_error(find(s), 13, "Command find requires authentication")
        login(s, "app", APP_PWD)
        assert find(s)["ok"] == 1
    assert APP_PWD not in lb.log()


def test_auth_db_name_too_long(sim, files):
    """A login to a database whose name is longer than MongoDB allows fails as an unknown user
    does: 18, the same message."""
    _, pw, path = files
    with checked(service(sim, pw, path)) as lb, lb.connect(login=False) as s:
        r = sasl_start(s, ScramClient("app", APP_PWD), db="d" * 65)
        assert_error(r, 18, "Authentication failed.")
        assert lb.status()["auth"]["loginFailures"] >= 1


def test_login_without_skip_empty_exchange(sim, files):
    """A client that does not ask for skipEmptyExchange gets done: false with the server's
    signature, then done: true for its empty last step, as from mongod."""
    _, pw, path = files
    with checked(service(sim, pw, path)) as lb, lb.connect(login=False) as s:
        for mech in ("SCRAM-SHA-256", "SCRAM-SHA-1"):
            sc = ScramClient("app", APP_PWD, mech)
            r = sasl_start(s, sc, skip_empty=False)
            assert r["ok"] == 1 and r["done"] is False, r
            r = call(s, {"saslContinue": 1, "conversationId": r["conversationId"],
                         "payload": sc.final(r["payload"])})
            assert r["ok"] == 1 and r["done"] is False, r
            assert bytes(r["payload"]).decode() == sc.expect
            r = call(s, {"saslContinue": 1, "conversationId": r["conversationId"],
                         "payload": b""})
            assert r["ok"] == 1 and r["done"] is True and bytes(r["payload"]) == b"", r
            assert find(s)["ok"] == 1


def test_second_login_and_logout(sim, files):
    """A second login on one connection replaces the first user (what it may run changes with
    it); logout ends the login: commands need one again."""
    _, pw, path = files
    with checked(service(sim, pw, path)) as lb, lb.connect(login=False) as s:
        login(s, "app", APP_PWD)
        assert find(s)["ok"] == 1
        assert_error(call(s, {"mongolbStatus": 1}), 13, "app@admin is neither")
        login(s, "ops", OPS_PWD, mech="SCRAM-SHA-1")
        st = call(s, {"mongolbStatus": 1})
        assert st["ok"] == 1 and st["auth"]["logins"] >= 2, st
        r = call(s, {"logout": 1})
        assert r["ok"] == 1, r
        assert_error(find(s), 13, "Command find requires authentication")
        assert_error(call(s, {"mongolbStatus": 1}), 13, "requires authentication")
        # A logout without a login is harmless.
        assert call(s, {"logout": 1})["ok"] == 1
        login(s, "app", APP_PWD)
        assert find(s)["ok"] == 1


def test_authenticate_command_is_refused(sim, files):
    """Applications log in with SCRAM only: `authenticate` (MONGODB-X509, MONGODB-CR) gets 334
    saying so, and logs nobody in."""
    _, pw, path = files
    with checked(service(sim, pw, path)) as lb, lb.connect(login=False) as s:
        r = call(s, {"authenticate": 1, "mechanism": "MONGODB-X509"}, db="$external")
        assert_error(r, 334, "MONGODB-X509 and other mechanisms are not available")
        assert_error(find(s), 13, "requires authentication")
    # A driver asked for X.509 gets that error as the reason of its failed login.
    with checked(service(sim, pw, path)) as lb:
        with pymongo.MongoClient(lb.base_uri(), username="CN=app", authMechanism="MONGODB-X509",
                                 serverSelectionTimeoutMS=5000) as c:
            with pytest.raises(OperationFailure) as e:
                c.test.autherr.find_one()
            assert e.value.code == 334 and "not available through mongolb" in str(e.value)


# --- max_cached_users ------------------------------------------------------------------------------


def raw_login_logout(lb, user, password):
    with lb.connect(login=False) as s:
        scram_sha256_login(s, user, password)
        assert call(s, {"logout": 1})["ok"] == 1


def test_max_cached_users_evicts_cached_verifiers(sim, files):
    """Passthrough with max_cached_users = 2, one of them the admin, held by its idle server
    connection: a user released last stays cached (its next login reads no verifier), and one
    pushed out by another user's login is read again."""
    d, pw, _ = files
    path = os.path.join(d, "admin.auth")  # the admin logs in from the file: no fetch
    with open(path, "w") as f:
        f.write(cluster_lines(sim, "admin"))
    os.chmod(path, 0o600)
    cfg = {"auth.mode": "passthrough", "auth.service_user": "admin",
           "auth.service_password_file": pw, "auth.auth_file": path,
           "auth.admin_users": "admin@admin", "auth.max_cached_users": "2"}
    with checked(start_mongolb(sim.servers, cfg, admin=("admin", ADMIN_PWD, "admin"))) as lb:
        with lb.connect() as s:
            # A server connection logged in as the admin: it holds the admin's user while idle.
            assert find(s)["ok"] == 1
            before = call(s, {"mongolbStatus": 1})["auth"]
            raw_login_logout(lb, "writer", "wpw")  # read
            raw_login_logout(lb, "writer", "wpw")  # cached
            raw_login_logout(lb, "reader", "rpw")  # read; writer pushed out
            raw_login_logout(lb, "writer", "wpw")  # read again; reader pushed out
            after = call(s, {"mongolbStatus": 1})["auth"]
        assert after["verifierFetches"] - before["verifierFetches"] == 3, (before, after)
        assert after["verifierCacheHits"] - before["verifierCacheHits"] == 1, (before, after)
        assert after["logins"] - before["logins"] == 4, (before, after)
        assert after["cachedUsers"] <= 2, after


# --- service_password_file -------------------------------------------------------------------------


def conf_text(pw, path, seeds="127.0.0.1:1"):
    return ("[mongolb]\nlisten = 127.0.0.1:%d\n[upstream]\nseeds = %s\n[auth]\nmode = service\n"
            "auth_file = %s\nservice_user = admin\nservice_password_file = %s\n"
            % (free_port(), seeds, path, pw))


def check_config(conf):
    return subprocess.run([mongolb_binary(), "--check-config", "-c", conf], capture_output=True,
                          text=True, timeout=30)


@pytest.mark.parametrize("case", ["missing", "directory", "empty", "too-long"])
def test_bad_service_password_file(files, case):
    """--check-config and a start both refuse a password file that is missing, not a file, or
    has no password on its first line, with the reason; no secret is printed."""
    d, _, path = files
    pw = os.path.join(d, "bad.password")
    if case == "directory":
        os.mkdir(pw, 0o700)
    elif case == "empty":
        with open(pw, "w") as f:
            f.write("\nsecond-line-secret\n")
        os.chmod(pw, 0o600)
    elif case == "too-long":
        with open(pw, "w") as f:
            f.write("x" * 2000 + "\n")
        os.chmod(pw, 0o600)
    want = {"missing": "cannot open service_password_file %s" % pw,
            "directory": "service_password_file %s is not a regular file" % pw,
            "empty": "service_password_file %s: the first line must hold the password" % pw,
            "too-long": "the first line must hold the password"}[case]
    conf = os.path.join(d, "mongolb.ini")
    with open(conf, "w") as f:
        f.write(conf_text(pw, path))
    out = check_config(conf)
    assert out.returncode == 1 and want in out.stderr, out.stderr
    code, log = run_mongolb_conf(conf_text(pw, path), wait=10)
    assert code not in (None, 0) and want in log, (code, log)
    assert "second-line-secret" not in out.stderr + log


def test_reload_keeps_the_running_password(sim, files):
    """A reload that finds the password file unusable keeps the running password and auth_file,
    with a log line; logins and new server connections go on working."""
    _, pw, path = files
    with checked(service(sim, pw, path)) as lb:
        with pymongo.MongoClient(lb.uri_as("app", APP_PWD), serverSelectionTimeoutMS=5000) as c:
            c.test.autherr.insert_one({"before": 1})
        os.chmod(pw, 0o644)
        with open(path, "a") as f:
            f.write(make_verifier("late@admin", "late-pw"))
        lb.proc.send_signal(1)
        wait_for(lambda: "reload: keeping the running auth_file and password" in lb.log(),
                 what="the reload's refusal")
        assert "may be read by group or others (mode 644)" in lb.log()
        # The auth_file was not read again either: its new user is unknown.
        with pymongo.MongoClient(lb.uri_as("late", "late-pw"),
                                 serverSelectionTimeoutMS=5000) as c:
            with pytest.raises(OperationFailure) as e:
                c.test.autherr.find_one()
            assert e.value.code == 18
        # The running password still logs new server connections in.
        with pymongo.MongoClient(lb.uri_as("app", APP_PWD), serverSelectionTimeoutMS=5000) as c:
            assert c.test.autherr.find_one({"before": 1}) is not None
        assert ADMIN_PWD not in lb.log()
        os.chmod(pw, 0o600)


# --- servers that answer mongolb's logins and usersInfo oddly --------------------------------------


def verifier(mech, user, password, salt=b"0123456789abcdef", iters=4096):
    """A user's SCRAM credentials as a server keeps them (and usersInfo shows them)."""
    salted = salted_password(mech, user, password, salt, iters)
    stored = HASHES[mech](mac(mech, salted, b"Client Key")).digest()
    return {"iterationCount": iters, "salt": base64.b64encode(salt).decode(),
            "storedKey": base64.b64encode(stored).decode(),
            "serverKey": base64.b64encode(mac(mech, salted, b"Server Key")).decode()}


class ScramFake:
    """A fake mongos whose logins are real SCRAM (both mechanisms) for the users given as
    {name: password}, all defined in admin. The test's hooks change what it answers:
    on_start(cmd) and on_continue(cmd) may return a reply instead of the SCRAM one; users_info(cmd)
    answers usersInfo; done_false makes the proof's answer done: false (an empty last step
    follows); bad_signature answers the proof with a signature made with another key. Other
    commands get an empty cursor or ok: 1."""

    def __init__(self, users, on_start=None, users_info=None, done_false=False,
                 bad_signature=False):
        self.users = users
        self.bad_signature = bad_signature
        self.on_start = on_start
        self.users_info = users_info
        self.done_false = done_false
        self.convs = {}
        self.ids = iter(range(1, 1 << 30))
        self.lock = threading.Lock()
        self.fs = FakeServer(self.handle, mongos=True)

    def handle(self, fs, cmd):
        name = next(iter(cmd), "")
        if name in HELLO_NAMES:
            return fs.mongos_hello(legacy=name != "hello")
        if name == "saslStart":
            if self.on_start:
                r = self.on_start(cmd)
                if r is not None:
                    return r
            return self.start(cmd)
        if name == "saslContinue":
            return self.cont(cmd)
        if name == "usersInfo" and self.users_info:
            return self.users_info(cmd)
        if name == "find":
            return {"cursor": {"id": 0, "ns": "test." + cmd["find"], "firstBatch": []}, "ok": 1}
        return {"ok": 1}

    def start(self, cmd):
        mech = cmd["mechanism"]
        first = bytes(cmd["payload"]).decode()
        bare = first.split(",", 2)[2]
        f = dict(kv.split("=", 1) for kv in bare.split(","))
        user = f["n"]
        if user not in self.users:
            return {"ok": 0, "code": 18, "codeName": "AuthenticationFailed",
                    "errmsg": "Authentication failed."}
        v = verifier(mech, user, self.users[user])
        nonce = f["r"] + base64.b64encode(os.urandom(18)).decode()
        server_first = "r=%s,s=%s,i=%d" % (nonce, v["salt"], v["iterationCount"])
        with self.lock:
            cid = next(self.ids)
            self.convs[cid] = (mech, v, bare, server_first, False)
        return {"conversationId": cid, "done": False,
                "payload": bson.Binary(server_first.encode()), "ok": 1}

    def cont(self, cmd):
        cid = cmd["conversationId"]
        with self.lock:
            conv = self.convs.get(cid)
        if conv is None:
            return {"ok": 0, "code": 17, "errmsg": "No SASL session state found"}
        mech, v, bare, server_first, proven = conv
        if proven:  # the empty last step
            assert bytes(cmd["payload"]) == b""
            return {"conversationId": cid, "done": True, "payload": bson.Binary(b""), "ok": 1}
        final = bytes(cmd["payload"]).decode()
        without_proof, proof = final.rsplit(",p=", 1)
        am = ",".join((bare, server_first, without_proof)).encode()
        stored = base64.b64decode(v["storedKey"])
        sig = mac(mech, stored, am)
        ck = bytes(a ^ b for a, b in zip(base64.b64decode(proof), sig))
        if HASHES[mech](ck).digest() != stored:
            return {"ok": 0, "code": 18, "codeName": "AuthenticationFailed",
                    "errmsg": "Authentication failed."}
        server_key = base64.b64decode(v["serverKey"])
        if self.bad_signature:
            server_key = bytes(len(server_key))
        server_sig = base64.b64encode(mac(mech, server_key, am)).decode()
        with self.lock:
            self.convs[cid] = (mech, v, bare, server_first, True)
        return {"conversationId": cid, "done": not self.done_false,
                "payload": bson.Binary(("v=" + server_sig).encode()), "ok": 1}

    def sent(self, name):
        with self.fs.lock:
            return [c for c in self.fs.received if next(iter(c), "") == name]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.fs.close()


def fake_service(fake, pw, path, **extra):
    cfg = {"auth.mode": "service", "auth.auth_file": path, "auth.service_user": "admin",
           "auth.service_password_file": pw, "auth.admin_users": "ops@admin",
           "upstream.server_selection_timeout_ms": "3000"}
    cfg.update(extra)
    return start_mongolb([fake.fs.address], cfg, admin=("ops", OPS_PWD, "admin"))


def test_service_login_scram_sha1_with_an_empty_last_step(files):
    """service_mechanism = SCRAM-SHA-1 logs mongolb in with SHA-1; a server that answers the proof
    with done: false gets the empty last step, and the connection then serves requests."""
    _, pw, path = files
    with ScramFake({"admin": ADMIN_PWD}, done_false=True) as fake, \
            checked(fake_service(fake, pw, path,
                                 **{"auth.service_mechanism": "SCRAM-SHA-1"})) as lb:
        with pymongo.MongoClient(lb.uri_as("app", APP_PWD), serverSelectionTimeoutMS=5000) as c:
            assert c.test.autherr.find_one() is None
        starts = fake.sent("saslStart")
        assert starts and all(s["mechanism"] == "SCRAM-SHA-1" for s in starts), starts
        assert all(s["options"] == {"skipEmptyExchange": True} for s in starts)
        conts = fake.sent("saslContinue")
        assert any(bytes(c["payload"]) == b"" for c in conts), conts
        st = lb.status()["auth"]
        assert st["backendLogins"] >= 1 and st["backendLoginFailures"] == 0, st
        assert fake.sent("find")


BAD_SERVER_FIRST = {
    "unreadable": None,  # an OP_REPLY where an OP_MSG is due
    "conversation-id": {"conversationId": 1 << 40, "done": False,
                        "payload": bson.Binary(b"r=x,s=AAAA,i=4096"), "ok": 1},
    "no-payload": {"conversationId": 1, "done": False, "ok": 1},
    "foreign-nonce": {"conversationId": 1, "done": False,
                      "payload": bson.Binary(b"r=notmynonce,s=MDEyMzQ1Njc4OWFiY2RlZg==,i=4096"),
                      "ok": 1},
}
BAD_SERVER_WHY = {
    "unreadable": "login as admin: unreadable reply",
    "conversation-id": "login as admin: conversationId 1099511627776 out of range",
    "no-payload": "login as admin: a reply without a payload",
    "foreign-nonce": "login as admin: ",
}


def test_service_login_server_signature_wrong(files):
    """A server that accepts mongolb's proof but cannot prove it knows the service user's key (its
    signature is wrong: not the cluster mongolb means to talk to) is refused as a failed login:
    no request reaches it, the application gets 6 naming the reason, the server's logins back
    off."""
    _, pw, path = files
    with ScramFake({"admin": ADMIN_PWD}, bad_signature=True) as fake, \
            checked(fake_service(fake, pw, path)) as lb:
        with pymongo.MongoClient(lb.uri_as("app", APP_PWD), serverSelectionTimeoutMS=5000,
                                 retryReads=False) as c:
            with pytest.raises(OperationFailure) as e:
                c.test.autherr.find_one()
        # The reason says the server failed to prove itself: "authentication failed" alone
        # reads as mongolb's credential refused, and sends the operator to the wrong file.
        assert e.value.code == 6, e.value
        assert "login as admin: the server's signature is wrong" in str(e.value), e.value
        assert "login retried in" in str(e.value), e.value
        wait_for(lambda: "no new connection as admin for" in lb.log(), what="the back-off line")
        assert lb.status()["auth"]["backendLoginFailures"] >= 1
        assert not fake.sent("find") and "marked unknown" not in lb.log()


def op_reply_writer(conn, request_id):
    doc = bson.BSON.encode({"ok": 1})
    payload = struct.pack("<iqii", 0, 0, 0, 1) + doc
    conn.sendall(struct.pack("<iiii", 16 + len(payload), 7, request_id, 1) + payload)


@pytest.mark.parametrize("case", sorted(BAD_SERVER_FIRST))
def test_service_login_odd_server_answers(files, case):
    """A server whose answer to mongolb's saslStart cannot be a SCRAM server's: the login fails
    with a log line naming what was wrong, the application gets an error document rather than a
    hang or a dropped connection, and mongolb stays up."""
    _, pw, path = files

    def on_start(cmd):
        if case == "unreadable":
            return op_reply_writer
        return BAD_SERVER_FIRST[case]

    with ScramFake({"admin": ADMIN_PWD}, on_start=on_start) as fake, \
            checked(fake_service(fake, pw, path)) as lb:
        with pymongo.MongoClient(lb.uri_as("app", APP_PWD), serverSelectionTimeoutMS=5000,
                                 retryReads=False) as c:
            with pytest.raises(pymongo.errors.PyMongoError) as e:
                c.test.autherr.find_one()
        # HostUnreachable naming the failed login, as for a server that cannot be reached.
        assert isinstance(e.value, OperationFailure) and e.value.code == 6, e.value
        assert "no connection: " + BAD_SERVER_WHY[case] in str(e.value), e.value
        wait_for(lambda: BAD_SERVER_WHY[case] in lb.log(), what="the login failure's log line")
        if case == "foreign-nonce":
            # A proof mongolb cannot compute is a refused login: the server stays known, and
            # its new logins back off.
            assert "malformed SCRAM message (login retried in" in str(e.value), e.value
            assert lb.status()["auth"]["backendLoginFailures"] >= 1
            assert "marked unknown" not in lb.log()
        else:
            # A server that does not speak the protocol is failed as a server.
            assert "marked unknown: " + BAD_SERVER_WHY[case] in lb.log()
        assert not fake.sent("find")
        assert ADMIN_PWD not in lb.log()


def test_passthrough_odd_users_info_answers(files):
    """usersInfo answers a real cluster can give: refused (the service user lacks viewUser), a
    user without credentials (an $external user), a user with SCRAM-SHA-1 credentials only.
    Each login gets what a driver can act on, and nothing is cached that should not be."""
    _, pw, _ = files
    users = {"admin": ADMIN_PWD, "sha1only": "s1pw", "nocreds": "x", "denied": "y"}

    def users_info(cmd):
        who = cmd["usersInfo"]["user"]
        if who == "denied":
            return {"ok": 0, "code": 13, "codeName": "Unauthorized",
                    "errmsg": "not authorized on admin to execute command { usersInfo: ... }"}
        doc = {"_id": "admin." + who, "user": who, "db": "admin", "roles": []}
        if who == "admin":
            doc["roles"] = [{"role": "root", "db": "admin"}]
            doc["credentials"] = {m: verifier(m, who, users[who]) for m in HASHES}
        elif who == "sha1only":
            doc["credentials"] = {"SCRAM-SHA-1": verifier("SCRAM-SHA-1", who, users[who])}
        elif who == "nocreds":
            doc["credentials"] = {"external": True}
        else:
            return {"users": [], "ok": 1}
        return {"users": [doc], "ok": 1}

    with ScramFake(users, users_info=users_info) as fake:
        cfg = {"auth.mode": "passthrough", "auth.service_user": "admin",
               "auth.service_password_file": pw, "auth.admin_users": "admin@admin",
               "upstream.server_selection_timeout_ms": "3000"}
        with checked(start_mongolb([fake.fs.address], cfg,
                                   admin=("admin", ADMIN_PWD, "admin"))) as lb:
            # Refused: 6 with the server's reason, at once.
            with pymongo.MongoClient(lb.uri_as("denied", "y"), serverSelectionTimeoutMS=5000,
                                     retryReads=False) as c:
                with pytest.raises(OperationFailure) as e:
                    c.test.autherr.find_one()
            assert e.value.code == 6, e.value
            assert "cannot read the verifier of denied@admin: usersInfo as service_user " \
                   "failed: 13 not authorized" in str(e.value), e.value
            # No SCRAM credentials: a failed login like any unknown user, read every time.
            before = lb.status()["auth"]
            for _ in range(2):
                with pymongo.MongoClient(lb.uri_as("nocreds", "x"),
                                         serverSelectionTimeoutMS=5000) as c:
                    with pytest.raises(OperationFailure) as e:
                        c.test.autherr.find_one()
                assert e.value.code == 18 and "Authentication failed." in str(e.value)
            after = lb.status()["auth"]
            # Each login read the verifier (none was cached); the one hit is the admin's own
            # login for the second status().
            assert after["verifierCacheHits"] == before["verifierCacheHits"] + 1, (before, after)
            assert after["verifierFetches"] >= before["verifierFetches"] + 2, (before, after)
            # SCRAM-SHA-1 only: hello lists it alone, a driver picks it, and the login and the
            # server connection (SHA-1 with the recovered key) work; SHA-256 fails.
            with lb.connect(login=False) as s:
                r = call(s, {"hello": 1, "saslSupportedMechs": "admin.sha1only"})
                assert r["saslSupportedMechs"] == ["SCRAM-SHA-1"], r
            with pymongo.MongoClient(lb.uri_as("sha1only", "s1pw"),
                                     serverSelectionTimeoutMS=5000) as c:
                assert c.test.autherr.find_one() is None
            assert any(s["mechanism"] == "SCRAM-SHA-1" and b"n=sha1only" in bytes(s["payload"])
                       for s in fake.sent("saslStart"))
            with pymongo.MongoClient(lb.uri_as("sha1only", "s1pw", authMechanism="SCRAM-SHA-256"),
                                     serverSelectionTimeoutMS=5000) as c:
                with pytest.raises(OperationFailure) as e:
                    c.test.autherr.find_one()
                assert e.value.code == 18
            assert "s1pw" not in lb.log() and ADMIN_PWD not in lb.log()


def test_refused_key_then_the_next_request(sim, files):
    """After a server refused the key recovered from a login (the password changed), the same
    connection's next request is for a user without a key: 18 telling it to log in again, with no
    login sent to a server; a new login then works."""
    _, pw, _ = files
    from test_proxy_auth import cluster_user, on_cluster, passthrough, sasl_starts

    with cluster_user(sim, "rekey", "old-pw"), checked(passthrough(sim, pw)) as lb:
        with lb.connect(login=False) as s:
            scram_sha256_login(s, "rekey", "old-pw")
            on_cluster(sim, "updateUser", "rekey", pwd="new-pw")
            r = find(s)
            assert r["ok"] == 0 and r["code"] == 18, r
            assert "rekey" in r["errmsg"], r
            starts = sasl_starts(sim)
            r = find(s)
            assert_error(r, 18, "the server refused rekey@admin's credentials; log in again")
            assert sasl_starts(sim) == starts
            scram_sha256_login(s, "rekey", "new-pw")
            assert find(s)["ok"] == 1
