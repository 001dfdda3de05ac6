"""Authentication through mongolb ([auth] mode off, service and passthrough) with PyMongo, against
mongosim --auth (whose SCRAM and roles test_sim_auth.py checks with PyMongo connecting directly).

The cluster's users: admin (root, the service user), reader (read on test) and writer (readWrite
on test), all defined in admin. What is checked: logins by URI with both mechanisms and authSource,
wrong passwords and unknown users (18, one message), commands before a login (13), the refusal
of any login in mode off (naming the setting), deny_commands and allow_commands, service mode with
an auth_file made by `mongolb --make-verifier`, the privilege separation of passthrough (a read
user and a readWrite user hammering the same collection from many threads, each on its own
pool), another user's cursor refused, and a password changed in the cluster: the verifier cache
of passthrough ([auth] verifier_cache_ms) refreshed by a failed attempt, by its expiry and by a
server refusing the recovered key, turned off (a read for every login), and a verifier that
cannot be read because the service user's login is refused.
"""

import os
import stat
import subprocess
import tempfile
import threading
import time

import pymongo
import pytest
from pymongo.errors import OperationFailure

from harness import connect, recv_msg, scram_sha256_login, send_msg, start_sim
from mongolb_harness import mongolb_binary, start_mongolb, wait_for
from tls_certs import tls_certs  # noqa: F401 (a pytest fixture)

ADMIN_PWD = "s3cret"
USERS = ("admin:%s" % ADMIN_PWD, "reader:rpw:read@test", "writer:wpw:readWrite@test")


def start_auth_sim(mongos):
    """mongosim with --auth and the users of USERS."""
    args = ["--mongos", str(mongos), "--auth"]
    for u in USERS:
        args += ["--auth-user", u]
    return start_sim(*args)


def write_private(path, text):
    """Writes a secret file as mongolb requires it: readable by its owner only."""
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)


def password_dir(prefix):
    """A temporary directory holding the service user's password file (mode 0600)."""
    d = tempfile.mkdtemp(prefix=prefix)
    pw = os.path.join(d, "service.password")
    write_private(pw, ADMIN_PWD + "\n")
    return d, pw


@pytest.fixture(scope="module")
def sim():
    with start_auth_sim(2) as s:
        yield s


@pytest.fixture
def files():
    return password_dir("mongolb-auth-")


def passthrough(sim, pw, **extra):
    cfg = {"auth.mode": "passthrough", "auth.service_user": "admin",
           "auth.service_password_file": pw, "auth.admin_users": "admin@admin"}
    cfg.update(extra)
    return start_mongolb(sim.servers, cfg, admin=("admin", ADMIN_PWD, "admin"))


class checked:
    """with checked(start_mongolb(...)) as lb: stops mongolb at the end and fails the test unless
    it exited 0 after SIGTERM with no sanitizer report in its log (the ASan build of make check)."""

    def __init__(self, lb):
        self.lb = lb

    def __enter__(self):
        return self.lb

    def __exit__(self, *exc):
        self.lb.cleanup()
        code, log = self.lb.proc.returncode, self.lb.log()
        if exc[0] is None:
            assert code == 0 and "AddressSanitizer" not in log and "runtime error:" not in log, \
                "mongolb exited with %s:\n%s" % (code, self.lb.log_tail(80))
        return False


def client(uri, **kw):
    kw.setdefault("serverSelectionTimeoutMS", 5000)
    return pymongo.MongoClient(uri, **kw)


def raw(lb, doc, db="admin"):
    doc = dict(doc)
    doc["$db"] = db
    with connect((lb.host, lb.port), 5.0) as s:
        send_msg(s, doc, request_id=1)
        return recv_msg(s)[1]


def make_verifier(name, password):
    out = subprocess.run([mongolb_binary(), "--make-verifier", name], input=password + "\n",
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout


# --- mode = off --------------------------------------------------------------------------------


def test_off_mode_refuses_logins_locally():
    with start_sim("--mongos", "1") as s, checked(start_mongolb(s.servers)) as lb:
        with pytest.raises(OperationFailure) as e:
            client(lb.uri_as("writer", "wpw")).test.c.find_one()
        assert e.value.code == 18
        assert "[auth] mode = off" in str(e.value)
        # Speculative authentication gets no answer; saslStart is never forwarded.
        r = raw(lb, {"hello": 1, "speculativeAuthenticate": {"saslStart": 1,
                                                              "mechanism": "SCRAM-SHA-256",
                                                              "payload": b"n,,n=a,r=x",
                                                              "db": "admin"}})
        assert r["ok"] == 1 and "speculativeAuthenticate" not in r
        r = raw(lb, {"saslStart": 1, "mechanism": "SCRAM-SHA-256", "payload": b"n,,n=a,r=x"})
        assert r["code"] == 18 and "mode = off" in r["errmsg"]
        assert lb.counters()["requests"] >= 2
        # Without credentials everything works as before.
        assert client(lb.uri).test.c.insert_one({"a": 1}).inserted_id


def test_deny_and_allow_commands():
    with start_sim("--mongos", "1") as s:
        cfg = {"auth.deny_commands": "dropDatabase, configureFailPoint"}
        with checked(start_mongolb(s.servers, cfg)) as lb:
            c = client(lb.uri)
            c.test.c.insert_many([{"i": i} for i in range(10)])
            for name in ("dropDatabase", "configureFailPoint"):
                with pytest.raises(OperationFailure) as e:
                    c.test.command(name) if name == "dropDatabase" else \
                        c.admin.command(name, "failCommand", mode="off")
                assert e.value.code == 13 and "deny_commands" in str(e.value)
            assert c.test.c.count_documents({}) == 10
            wait_for(lambda: "refused: mongolb: command dropDatabase" in lb.log(),
                     what="the refusal's log line")
        cfg = {"auth.allow_commands": "find,insert,ping,endSessions"}
        with checked(start_mongolb(s.servers, cfg)) as lb:
            c = client(lb.uri)
            c.test.d.insert_many([{"i": i} for i in range(10)])
            # getMore is always allowed: a find in batches works.
            assert len(list(c.test.d.find().batch_size(3))) == 10
            with pytest.raises(OperationFailure) as e:
                c.test.d.delete_many({})
            assert e.value.code == 13 and "allow_commands" in str(e.value)


# --- mode = passthrough ------------------------------------------------------------------------


@pytest.mark.parametrize("mech", ["SCRAM-SHA-256", "SCRAM-SHA-1"])
def test_passthrough_login_both_mechanisms(sim, files, mech):
    _, pw = files
    with checked(passthrough(sim, pw)) as lb:
        w = client(lb.uri_as("writer", "wpw", authMechanism=mech, authSource="admin"))
        w.test.pt.insert_one({"m": mech})
        r = client(lb.uri_as("reader", "rpw", authMechanism=mech))
        assert r.test.pt.count_documents({"m": mech}) >= 1
        with pytest.raises(OperationFailure) as e:
            r.test.pt.insert_one({"no": 1})
        assert e.value.code == 13
        st = lb.status()
        assert st["auth"]["logins"] >= 2 and st["auth"]["backendLoginFailures"] == 0


def test_passthrough_wrong_password_unknown_user_and_before_login(sim, files):
    _, pw = files
    with checked(passthrough(sim, pw, **{"auth.login_failure_delay_ms": 200})) as lb:
        for user, pwd in (("writer", "nope"), ("nobody", "x")):
            with pytest.raises(OperationFailure) as e:
                client(lb.uri_as(user, pwd)).test.c.find_one()
            assert e.value.code == 18 and "Authentication failed." in str(e.value)
        # The wrong authSource is a wrong user too.
        with pytest.raises(OperationFailure) as e:
            client(lb.uri_as("writer", "wpw", authSource="test")).test.c.find_one()
        assert e.value.code == 18
        # Repeated failures from one address get slowed down, with a log line.
        wait_for(lambda: "failed logins in a row" in lb.log(), what="the slow-down log line")
        # Before a login: ping and buildInfo work, the rest gets 13, nothing reaches a server.
        assert raw(lb, {"ping": 1})["ok"] == 1
        assert raw(lb, {"buildInfo": 1})["ok"] == 1
        r = raw(lb, {"find": "c"}, db="test")
        assert r["code"] == 13 and r["errmsg"] == "Command find requires authentication"
        r = raw(lb, {"getMore": 12345, "collection": "c"}, db="test")
        assert r["code"] == 13
        r = raw(lb, {"mongolbStatus": 1})
        assert r["code"] == 13
        # A user that is not an admin may not read mongolb's status either.
        with pytest.raises(OperationFailure) as e:
            client(lb.uri_as("writer", "wpw")).admin.command("mongolbStatus")
        assert e.value.code == 13 and "admin_users" in str(e.value)
        assert "wpw" not in lb.log() and ADMIN_PWD not in lb.log()


def test_privilege_separation_under_load(sim, files):
    """A read user and a readWrite user on the same collection from many threads at once: no
    connection logged in as one ever serves the other."""
    _, pw = files
    with checked(passthrough(sim, pw, **{"upstream.max_pool_size": "6"})) as lb:
        reader = client(lb.uri_as("reader", "rpw"), maxPoolSize=20)
        writer = client(lb.uri_as("writer", "wpw"), maxPoolSize=20)
        writer.test.hammer.delete_many({})
        per_thread = 120
        results = {"r_denied": 0, "r_other": [], "w_ok": 0, "w_other": [], "reads": 0}
        lock = threading.Lock()

        def read_user(t):
            for i in range(per_thread):
                try:
                    reader.test.hammer.insert_one({"by": "reader", "t": t, "i": i})
                    with lock:
                        results["r_other"].append("insert succeeded")
                except OperationFailure as e:
                    with lock:
                        if e.code == 13:
                            results["r_denied"] += 1
                        else:
                            results["r_other"].append(str(e))
                reader.test.hammer.find_one({"t": t})
                with lock:
                    results["reads"] += 1

        def write_user(t):
            for i in range(per_thread):
                try:
                    writer.test.hammer.insert_one({"by": "writer", "t": t, "i": i})
                    with lock:
                        results["w_ok"] += 1
                except Exception as e:  # noqa: BLE001 (every failure is a finding)
                    with lock:
                        results["w_other"].append(str(e))

        threads = [threading.Thread(target=read_user, args=(t,)) for t in range(8)]
        threads += [threading.Thread(target=write_user, args=(t,)) for t in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        n = 8 * per_thread
        assert results["r_other"] == [] and results["w_other"] == []
        assert results["r_denied"] == n and results["w_ok"] == n and results["reads"] == n
        assert writer.test.hammer.count_documents({"by": "reader"}) == 0
        assert writer.test.hammer.count_documents({"by": "writer"}) == n
        st = lb.status()
        names = set()
        for s in st["servers"]:
            users = s["pool"]["users"]
            names.update(u["user"] for u in users)
            assert s["pool"]["total"] <= 6
        assert {"reader@admin", "writer@admin"} <= names
        assert st["auth"]["backendLoginFailures"] == 0


def test_other_users_cursor_is_refused(sim, files):
    _, pw = files
    with checked(passthrough(sim, pw)) as lb:
        writer = client(lb.uri_as("writer", "wpw"))
        reader = client(lb.uri_as("reader", "rpw"))
        writer.test.cur.delete_many({})
        writer.test.cur.insert_many([{"i": i} for i in range(20)])
        cur = reader.test.cur.find().batch_size(2)
        next(cur)
        cid = cur.cursor_id
        assert cid
        for cmd in ({"getMore": cid, "collection": "cur"}, {"killCursors": "cur",
                                                            "cursors": [cid]}):
            with pytest.raises(OperationFailure) as e:
                writer.test.command(cmd)
            assert e.value.code == 13
            assert "not created by the authenticated user" in str(e.value)
        assert "getMore of another user's cursor %d refused" % cid in lb.log()
        # The owner's cursor is intact.
        assert len(list(cur)) == 19


def on_cluster(sim, *cmd, **kw):
    """Runs a user-management command on the cluster (the simulated mongos share their users)."""
    with pymongo.MongoClient(sim.uri_as("admin", ADMIN_PWD, 0),
                             serverSelectionTimeoutMS=5000) as d:
        d.admin.command(*cmd, **kw)


class cluster_user:
    """with cluster_user(sim, name, pwd): a readWrite@test user defined in admin on every server,
    dropped at the end."""

    def __init__(self, sim, name, pwd):
        self.sim, self.name, self.pwd = sim, name, pwd

    def __enter__(self):
        on_cluster(self.sim, "createUser", self.name, pwd=self.pwd,
                        roles=[{"role": "readWrite", "db": "test"}])
        return self

    def __exit__(self, *exc):
        try:
            on_cluster(self.sim, "dropUser", self.name)
        except OperationFailure:
            pass
        return False


def auth_counters(lb):
    return lb.status()["auth"]


def login_fails(uri, code=18):
    """A login (and a first command) with uri fails with code; returns the error's text."""
    with client(uri, retryReads=False) as c:
        with pytest.raises(OperationFailure) as e:
            c.test.chg.find_one()
        assert e.value.code == code, e.value
        return str(e.value)


def test_password_change_in_the_cluster(sim, files):
    """With the default verifier_cache_ms (30 s) a verifier read for one login serves the next
    ones. After a password change the first login with the new password fails against the cached
    verifier, which drops it (the attempt itself cannot be saved: its proof was made with the
    cached salt); the next attempt reads the verifier again and succeeds, and from then on the old
    password fails at mongolb."""
    _, pw = files
    with cluster_user(sim, "changer", "old-pw"), checked(passthrough(sim, pw)) as lb:
        with client(lb.uri_as("changer", "old-pw")) as c:
            c.test.chg.insert_one({"v": 1})
        on_cluster(sim, "updateUser", "changer", pwd="new-pw")
        # The cached verifier is the old one: at most one failed attempt...
        before = auth_counters(lb)
        login_fails(lb.uri_as("changer", "new-pw"))
        assert "failed against its cached verifier" in lb.log()
        # ...then the new password works: the verifier was read again.
        with client(lb.uri_as("changer", "new-pw")) as c:
            assert c.test.chg.count_documents({}) >= 1
        after = auth_counters(lb)
        assert after["verifierCacheDrops"] == before["verifierCacheDrops"] + 1
        assert after["verifierFetches"] == before["verifierFetches"] + 1
        # The old password no longer passes mongolb, whose cached verifier is now the new one.
        login_fails(lb.uri_as("changer", "old-pw"))
        assert "old-pw" not in lb.log() and "new-pw" not in lb.log()


def test_verifier_cache_ttl_after_a_password_change(sim, files):
    """Once verifier_cache_ms has passed, the next login reads the verifier again: after a
    password change the new password works at the first attempt and the old one fails."""
    _, pw = files
    with cluster_user(sim, "ttl", "old-pw"), \
            checked(passthrough(sim, pw, **{"auth.verifier_cache_ms": "300"})) as lb:
        with client(lb.uri_as("ttl", "old-pw")) as c:
            c.test.chg.insert_one({"v": 1})
        on_cluster(sim, "updateUser", "ttl", pwd="new-pw")
        time.sleep(0.6)
        before = auth_counters(lb)
        with client(lb.uri_as("ttl", "new-pw")) as c:
            assert c.test.chg.count_documents({}) >= 1
        after = auth_counters(lb)
        # At the first attempt: no failed login, and the verifier was read again.
        assert after["loginFailures"] == before["loginFailures"], (before, after)
        assert after["verifierFetches"] > before["verifierFetches"], (before, after)
        assert "ttl@admin failed against its cached verifier" not in lb.log()
        login_fails(lb.uri_as("ttl", "old-pw"))


def test_verifier_cache_old_password_refused_by_the_server(sim, files):
    """Within verifier_cache_ms the old password still passes mongolb's own check (the trade-off
    the README describes), but a server connection cannot log in with the key it yields: the
    request gets 18 naming the refusal, the cached verifier and key are dropped, and the next
    login reads the verifier again (the new password works at the first attempt, the old one
    fails at mongolb)."""
    _, pw = files
    with cluster_user(sim, "stale", "old-pw"), checked(passthrough(sim, pw)) as lb:
        # A login alone (a raw socket: a driver would end its sessions on a server when it
        # closes) caches the verifier and opens no server connection of the user, so the next
        # request needs a new one.
        with lb.connect(login=False) as sock:
            scram_sha256_login(sock, "stale", "old-pw")
        on_cluster(sim, "updateUser", "stale", pwd="new-pw")
        before = auth_counters(lb)
        msg = login_fails(lb.uri_as("stale", "old-pw"))
        assert "login as stale" in msg or "refused the login of stale" in msg, msg
        after = auth_counters(lb)
        assert after["backendLoginFailures"] > before["backendLoginFailures"]
        assert after["verifierCacheDrops"] == before["verifierCacheDrops"] + 1
        with client(lb.uri_as("stale", "new-pw")) as c:
            c.test.chg.insert_one({"v": 2})
        login_fails(lb.uri_as("stale", "old-pw"))


def test_verifier_cache_second_login_does_not_fetch(sim, files):
    _, pw = files
    with checked(passthrough(sim, pw)) as lb:
        auth_counters(lb)  # the admin's verifier, read once, is cached too
        with client(lb.uri_as("writer", "wpw")) as c:
            c.test.vc.insert_one({"x": 1})
        first = auth_counters(lb)
        for mech in ("SCRAM-SHA-256", "SCRAM-SHA-1", "SCRAM-SHA-256"):
            with client(lb.uri_as("writer", "wpw", authMechanism=mech)) as c:
                assert c.test.vc.count_documents({}) >= 1
        then = auth_counters(lb)
        assert then["verifierFetches"] == first["verifierFetches"], (first, then)
        assert then["verifierCacheHits"] >= first["verifierCacheHits"] + 4
        assert then["logins"] == first["logins"] + 4


def test_verifier_cache_off_fetches_every_login(sim, files):
    _, pw = files
    with checked(passthrough(sim, pw, **{"auth.verifier_cache_ms": "0"})) as lb:
        first = auth_counters(lb)
        for _ in range(3):
            with client(lb.uri_as("writer", "wpw")) as c:
                c.test.vc.find_one()
        then = auth_counters(lb)
        # One read for each of the three logins and one for the admin login of status().
        assert then["verifierFetches"] == first["verifierFetches"] + 4, (first, then)
        assert then["verifierCacheHits"] == 0


def test_passthrough_verifier_read_refused(sim, files):
    """A wrong service password in passthrough: the verifier of an application's user cannot be
    read. Its login gets an error that says why, at once (no hang), and the password never
    reaches the log."""
    d, _ = files
    bad = os.path.join(d, "bad.password")
    write_private(bad, "not-the-password\n")
    # The admin's verifier comes from the auth_file, so that status() can log in.
    path = os.path.join(d, "users.auth")
    write_private(path, cluster_lines(sim, "admin"))
    with checked(passthrough(sim, bad, **{"auth.auth_file": path})) as lb:
        for _ in range(3):
            t0 = time.monotonic()
            with client(lb.uri_as("writer", "wpw"), retryReads=False) as c:
                with pytest.raises(OperationFailure) as e:
                    c.test.vc.find_one()
            assert time.monotonic() - t0 < 10
            assert e.value.code == 6, e.value
            assert "cannot read the verifier of writer@admin" in str(e.value), e.value
            assert "refused the login of admin" in str(e.value), e.value
        assert "cannot read the verifier of writer@admin" in lb.log()
        assert "not-the-password" not in lb.log()


def cluster_lines(sim, user, db="admin"):
    """The auth_file lines of a cluster user, copied from usersInfo as an operator would."""
    direct = pymongo.MongoClient(sim.uri_as("admin", ADMIN_PWD, 0), serverSelectionTimeoutMS=5000)
    u = direct[db].command("usersInfo", {"user": user, "db": db},
                           showCredentials=True)["users"][0]
    return "".join("%s.%s %s %d %s %s %s\n" % (db, user, mech, c["iterationCount"], c["salt"],
                                               c["storedKey"], c["serverKey"])
                   for mech, c in u["credentials"].items())


def test_passthrough_from_auth_file(sim, files):
    """Without service_user the verifiers come from the auth_file alone: lines copied from the
    cluster. A verifier made with the right password but another salt cannot log in to the
    servers as that user: the application gets 18 with the reason."""
    d, _ = files
    path = os.path.join(d, "users.auth")
    with open(path, "w") as f:
        f.write(cluster_lines(sim, "writer"))
        f.write(make_verifier("reader@admin", "rpw"))
    os.chmod(path, 0o600)
    cfg = {"auth.mode": "passthrough", "auth.auth_file": path, "auth.admin_users": "writer@admin"}
    with checked(start_mongolb(sim.servers, cfg, admin=("writer", "wpw", "admin"))) as lb:
        w = client(lb.uri_as("writer", "wpw"))
        w.test.af.insert_one({"x": 1})
        with pytest.raises(OperationFailure) as e:
            client(lb.uri_as("reader", "rpw")).test.af.find_one()
        assert e.value.code == 18 and "salt or iteration count" in str(e.value)
        with pytest.raises(OperationFailure) as e:
            client(lb.uri_as("admin", ADMIN_PWD)).test.af.find_one()  # not in the file
        assert e.value.code == 18
        st = lb.status()
        assert st["auth"]["verifierFetches"] == 0 and st["auth"]["backendLoginFailures"] >= 1


# --- mode = service ----------------------------------------------------------------------------


def test_service_mode(sim, files):
    d, pw = files
    path = os.path.join(d, "users.auth")
    with open(path, "w") as f:
        f.write(make_verifier("app@admin", "app-pw"))
        f.write(make_verifier("ops@admin", "ops-pw"))
    os.chmod(path, 0o600)
    cfg = {"auth.mode": "service", "auth.auth_file": path, "auth.service_user": "admin",
           "auth.service_password_file": pw, "auth.admin_users": "ops@admin"}
    with checked(start_mongolb(sim.servers, cfg, admin=("ops", "ops-pw", "admin"))) as lb:
        for mech in ("SCRAM-SHA-256", "SCRAM-SHA-1"):
            c = client(lb.uri_as("app", "app-pw", authMechanism=mech))
            c.test.svc.insert_one({"m": mech})  # the servers see admin (root)
            assert c.test.svc.count_documents({"m": mech}) >= 1
        with pytest.raises(OperationFailure) as e:
            client(lb.uri_as("app", "wrong")).test.svc.find_one()
        assert e.value.code == 18
        # The cluster's own users are not mongolb's users in service mode.
        with pytest.raises(OperationFailure):
            client(lb.uri_as("writer", "wpw")).test.svc.find_one()
        st = lb.status()
        assert st["auth"]["mode"] == "service" and st["auth"]["backendLogins"] >= 1
        # SIGHUP reads the auth_file again: a user added to it can log in.
        with open(path, "a") as f:
            f.write(make_verifier("late@admin", "late-pw"))
        lb.proc.send_signal(1)
        wait_for(lambda: "auth_file" in lb.log() and "read again" in lb.log(),
                 what="the reload")
        client(lb.uri_as("late", "late-pw")).test.svc.find_one()


def test_hostile_login_documents(sim, files):
    """Login documents with fields of the wrong type or out of range get an error reply and cost
    nothing else. auth_parse.c checks a number's range before converting it (libbson's
    bson_iter_as_int64, used before, casts a double such as 1e300 or NaN unchecked, undefined
    behaviour that no sanitizer sees inside libbson); tests/fuzz/fuzz_auth_parse.c fuzzes it."""
    _, pw = files
    with checked(passthrough(sim, pw)) as lb:
        for conv in (1e300, float("nan"), -1e300, 1.5, "1"):
            r = raw(lb, {"saslContinue": 1, "conversationId": conv, "payload": b""})
            assert r["ok"] == 0 and r["code"] == 17, r
        r = raw(lb, {"saslStart": 1, "mechanism": 5, "payload": [1]})
        assert r["ok"] == 0 and r["code"] == 334, r
        r = raw(lb, {"saslStart": 1, "mechanism": "SCRAM-SHA-256", "payload": 7})
        assert r["ok"] == 0 and r["code"] == 17, r
        r = raw(lb, {"hello": 1, "saslSupportedMechs": 5, "speculativeAuthenticate": {}})
        assert r["ok"] == 1 and "saslSupportedMechs" not in r and "speculativeAuthenticate" not in r
        r = raw(lb, {"hello": 1, "saslSupportedMechs": "nodot",
                     "speculativeAuthenticate": {"saslStart": 1, "mechanism": "SCRAM-SHA-256",
                                                 "payload": b"n,,n=writer,r=abc", "db": 7}})
        assert r["ok"] == 1 and "saslSupportedMechs" not in r
        # The proxy still serves a real login afterwards.
        assert client(lb.uri_as("writer", "wpw")).test.command("ping")["ok"] == 1


def test_files_readable_by_others_are_refused(files):
    d, pw = files
    path = os.path.join(d, "users.auth")
    with open(path, "w") as f:
        f.write(make_verifier("app@admin", "app-pw"))
    os.chmod(path, 0o644)
    conf = os.path.join(d, "mongolb.ini")
    with open(conf, "w") as f:
        f.write("[upstream]\nseeds = 127.0.0.1:1\n[auth]\nmode = service\nauth_file = %s\n"
                "service_user = admin\nservice_password_file = %s\n" % (path, pw))
    out = subprocess.run([mongolb_binary(), "--check-config", "-c", conf], capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 1 and path in out.stderr
    os.chmod(path, 0o600)
    os.chmod(pw, 0o640)
    out = subprocess.run([mongolb_binary(), "--check-config", "-c", conf], capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 1 and "service_password_file" in out.stderr
    assert ADMIN_PWD not in out.stderr
    os.chmod(pw, 0o600)
    out = subprocess.run([mongolb_binary(), "--check-config", "-c", conf], capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_make_verifier_prints_both_mechanisms():
    lines = make_verifier("alice@app", "pencil").splitlines()
    assert [ln.split()[:2] for ln in lines] == [["app.alice", "SCRAM-SHA-256"],
                                                ["app.alice", "SCRAM-SHA-1"]]
    assert "pencil" not in "".join(lines)


def sasl_starts(sim):
    """saslStart commands the simulator's servers received, summed over all of them."""
    return sum(int(sv["commands"].get("saslStart", 0)) for sv in sim.stats(0)["servers"])


def test_service_user_refused_backs_off_without_marking_servers_unknown(sim, files):
    """A wrong service password: the servers' logins fail, which mongolb logs and reports as the
    servers' error; applications get error documents at once, not dropped sockets nor waits. The
    servers stay known (they are healthy: marking them unknown made them flap, since the monitor,
    which does not log in, brought them back at once), new logins back off (250 ms doubling up to
    10 s per server), mongolbStatus shows the refusal, and a reload with the right password ends
    it at once."""
    d, _ = files
    bad = os.path.join(d, "bad.password")
    write_private(bad, "not-the-password\n")
    path = os.path.join(d, "users.auth")
    write_private(path, make_verifier("app@admin", "app-pw"))
    cfg = {"auth.mode": "service", "auth.auth_file": path, "auth.service_user": "admin",
           "auth.service_password_file": bad, "upstream.server_selection_timeout_ms": "5000",
           "auth.admin_users": "app@admin"}
    with checked(start_mongolb(sim.servers, cfg, admin=("app", "app-pw", "admin"))) as lb:
        c = client(lb.uri_as("app", "app-pw"), retryReads=False, retryWrites=False)
        with pytest.raises(OperationFailure) as e:
            c.test.svc.find_one()
        assert "refused the login of admin" in str(e.value) and e.value.code == 6
        wait_for(lambda: "the server refused the login of admin" in lb.log(),
                 what="the log line of the refused service login")
        # While the pools back off, requests fail at once rather than wait for a server to
        # become known again (no "no suitable server yet" line), and open no new logins.
        before = sasl_starts(sim)
        for _ in range(20):
            with pytest.raises(OperationFailure) as e:
                c.test.svc.find_one()
            assert e.value.code == 6 and "refused the login of admin" in str(e.value)
        assert "no suitable server yet" not in lb.log()
        # Each server is tried again after its back-off (250 ms doubling): a few logins at most,
        # never one per request.
        assert sasl_starts(sim) - before <= 2 * 6
        st = lb.status()
        assert all(sv["type"] != "Unknown" for sv in st["servers"]), st["servers"]
        refused = [sv["pool"].get("serviceLoginRefused") for sv in st["servers"]]
        assert any(refused), st["servers"]
        for r in filter(None, refused):
            assert r["inARow"] >= 1 and "refused the login of admin" in r["error"]
        assert "marked unknown" not in lb.log()
        assert "not-the-password" not in lb.log() and "not-the-password" not in str(st)
        # The operator fixes the password: after SIGHUP the next request logs in at once.
        with open(bad, "w") as f:
            f.write(ADMIN_PWD + "\n")
        lb.proc.send_signal(1)
        wait_for(lambda: "service_password_file read again" in lb.log(), what="the reload")
        c.test.svc.insert_one({"ok": 1})
        assert c.test.svc.find_one({"ok": 1}) is not None
        wait_for(lambda: "accepted again" in lb.log(), what="the log line of the recovery")
        st = lb.status()
        assert not any(sv["pool"].get("serviceLoginRefused") for sv in st["servers"]
                       if sv["pool"]["total"] > 0), st["servers"]
        c.close()


def test_mongosh_through_passthrough(sim, files):
    from test_mongosh import mongosh
    _, pw = files
    with checked(passthrough(sim, pw)) as lb:
        uri = lb.uri_as("writer", "wpw", authSource="admin",
                        serverSelectionTimeoutMS=5000).replace(
            "/?", "/test?", 1)
        lines = mongosh(uri, "db.sh.insertOne({a: 1}); print(db.sh.countDocuments({a: 1}) > 0); "
                             "print(db.runCommand({connectionStatus: 1}).ok)")
        assert lines[-2:] == ["true", "1"], lines
        from test_mongosh import run_mongosh
        code, out, err = run_mongosh(lb.uri_as("writer", "bad"), "print(1)")
        assert code != 0 and "Authentication failed" in out + err


def test_service_mode_with_x509(tls_certs, files):  # noqa: F811 (a fixture)
    """service_mechanism = MONGODB-X509: backend connections log in with mongolb's TLS client
    certificate as its $external user."""
    d, _ = files
    subject = "CN=mongosim-client"
    path = os.path.join(d, "users.auth")
    write_private(path, make_verifier("app@admin", "app-pw"))
    with start_sim("--mongos", "2", "--auth", "--auth-user", "admin:%s" % ADMIN_PWD,
                   "--auth-user", subject + "@$external::readWrite@test",
                   "--tls-cert", tls_certs.server, "--tls-ca", tls_certs.ca,
                   tls_ca=tls_certs.ca) as s:
        cfg = {"upstream.tls": "true", "upstream.tls_ca_file": tls_certs.ca,
               "upstream.tls_certificate_key_file": tls_certs.client,
               "auth.mode": "service", "auth.auth_file": path, "auth.service_user": subject,
               "auth.service_auth_source": "$external", "auth.service_mechanism": "MONGODB-X509",
               "auth.admin_users": "app@admin"}
        with checked(start_mongolb(s.servers, cfg, admin=("app", "app-pw", "admin"))) as lb:
            c = client(lb.uri_as("app", "app-pw"))
            c.test.x509.insert_one({"ok": 1})  # readWrite on test as the certificate's user
            with pytest.raises(OperationFailure) as e:
                c.other.x509.insert_one({"no": 1})  # no role there
            assert e.value.code == 13
            assert lb.status()["auth"]["backendLogins"] >= 1
