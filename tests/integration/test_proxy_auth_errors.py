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
import subprocess
import tempfile

import bson
import pymongo
import pytest
from pymongo.errors import OperationFailure

from harness import recv_msg, scram_sha256_login, send_msg, start_sim
from mongolb_harness import free_port, mongolb_binary, run_mongolb_conf, start_mongolb, wait_for
from test_proxy_auth import ADMIN_PWD, USERS, checked, cluster_lines, make_verifier

APP_PWD = "app-pw"
OPS_PWD = "ops-pw"


@pytest.fixture(scope="module")
def sim():
    args = ["--mongos", "1", "--auth"]
    for u in USERS:
        args += ["--auth-user", u]
    with start_sim(*args) as s:
        yield s


@pytest.fixture
def files():
    d = tempfile.mkdtemp(prefix="mongolb-autherr-")
    pw = os.path.join(d, "service.password")
    with open(pw, "w") as f:
        f.write(ADMIN_PWD + "\n")
    os.chmod(pw, 0o600)
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
