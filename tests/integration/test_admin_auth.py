"""The admin HTTP listener with authentication on ([admin] http_auth, docs/CONFIG.md): /metrics
and /readyz, which name the servers, need the HTTP Basic credentials of one of [auth] admin_users,
checked against that user's verifier in the auth_file (made by `mongolb --make-verifier`);
/healthz stays open. Checked here: no credentials, a wrong password, an unknown user, a user who is
not an admin (all 401 with a Basic challenge; the log names the user, never the password), the
right admin with SCRAM-SHA-256 and SCRAM-SHA-1 verifiers (200), failures in a row delayed, a
success remembered (no second PBKDF2) until the auth_file gives the user a new password,
http_auth = none on a unix socket, and mode = off unchanged."""

import base64
import os
import signal
import subprocess
import tempfile
import time

import pytest

from admin_harness import AdminMongolb, finish, http_connect, parse_prometheus, read_response
from harness import start_sim
from mongolb_harness import mongolb_binary, wait_for

ADMIN_PWD = "s3cret"


@pytest.fixture(scope="module")
def sim():
    with start_sim("--mongos", "2", "--auth", "--auth-user", "admin:%s" % ADMIN_PWD) as s:
        yield s


def make_verifier(name, password):
    out = subprocess.run([mongolb_binary(), "--make-verifier", name], input=password + "\n",
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout


def write_users(path, lines):
    with open(path, "w") as f:
        f.write("".join(lines))
    os.chmod(path, 0o600)


@pytest.fixture
def users():
    """An auth_file: ops (admin, both mechanisms), old (admin, SCRAM-SHA-1 only) and app (not an
    admin); and the service user's password file."""
    d = tempfile.mkdtemp(prefix="mongolb-admin-auth-")
    pw = os.path.join(d, "service.password")
    with open(pw, "w") as f:
        f.write(ADMIN_PWD + "\n")
    os.chmod(pw, 0o600)
    sha1 = [ln + "\n" for ln in make_verifier("old@admin", "old-pw").splitlines()
            if " SCRAM-SHA-1 " in ln]
    assert len(sha1) == 1
    path = os.path.join(d, "users.auth")
    write_users(path, [make_verifier("ops@admin", "ops-pw"), make_verifier("app@admin", "app-pw")]
                + sha1)
    return path, pw


def service(sim, users, **extra):
    path, pw = users
    cfg = {"mongolb.shutdown_timeout_ms": 1000, "auth.mode": "service", "auth.auth_file": path,
           "auth.service_user": "admin", "auth.service_password_file": pw,
           "auth.admin_users": "ops@admin, old@admin", "auth.login_failure_delay_ms": 300}
    cfg.update(extra)
    return AdminMongolb(sim.servers, cfg, admin=("ops", "ops-pw", "admin"))


def basic(cred):
    return "Basic " + base64.b64encode(cred.encode()).decode()


def get(lb, path, auth=None, method="GET", extra=""):
    """(status, headers, body) of one request with an optional Authorization value."""
    addr = lb.http_addr if hasattr(lb, "http_addr") else ("127.0.0.1", lb.http_port)
    with http_connect(addr) as s:
        head = "%s %s HTTP/1.1\r\nHost: mongolb\r\n" % (method, path)
        if auth is not None:
            head += "Authorization: %s\r\n" % auth
        s.sendall((head + extra + "\r\n").encode())
        return read_response(s, head_only=method == "HEAD")


def refused(lb, path, auth=None, method="GET"):
    status, headers, body = get(lb, path, auth, method)
    assert status == 401, (status, body)
    assert headers["www-authenticate"].startswith('Basic realm="mongolb"'), headers
    assert method == "HEAD" or b"admin_users" in body
    return body


def test_metrics_and_readyz_need_an_admin_user(sim, users):
    lb = service(sim, users)
    try:
        wait_for(lambda: get(lb, "/readyz", basic("ops@admin:ops-pw"))[0] == 200,
                 what="ready with credentials")
        # No credentials: the challenge, on both endpoints that name servers, and HEAD too.
        refused(lb, "/metrics")
        refused(lb, "/readyz")
        refused(lb, "/metrics", method="HEAD")
        # /healthz names nothing: open.
        status, _, body = get(lb, "/healthz")
        assert (status, body) == (200, b"ok\n")
        # The right admin, with its database, or without (admin is the default).
        status, headers, body = get(lb, "/metrics", basic("ops@admin:ops-pw"))
        assert status == 200 and headers["content-type"].startswith("text/plain; version=0.0.4")
        assert parse_prometheus(body.decode()).value("mongolb_server_up", server=sim.servers[0],
                                                     type="Mongos") == 1
        assert get(lb, "/metrics", basic("ops:ops-pw"))[0] == 200
        # A user with only a SCRAM-SHA-1 verifier (MongoDB's password digest).
        assert get(lb, "/readyz", basic("old@admin:old-pw"))[0] == 200
        # Each refusal gives the same answer; the log says what was wrong, naming the user only.
        bodies = {refused(lb, "/metrics", basic("ops@admin:wrong-pw-1")),
                  refused(lb, "/metrics", basic("app@admin:app-pw")),
                  refused(lb, "/readyz", basic("nobody@admin:wrong-pw-2")),
                  refused(lb, "/metrics", basic("ops@test:ops-pw")),
                  refused(lb, "/metrics", basic("ops@admin")),
                  refused(lb, "/metrics", "Bearer abc"),
                  refused(lb, "/metrics", "Basic !!!")}
        assert len(bodies) == 1
        log = lb.log()
        assert "ops@admin gave a wrong password" in log
        assert "app@admin is not in [auth] admin_users" in log
        assert "nobody@admin is not in [auth] admin_users" in log
        assert "the Authorization field is not Basic" in log
        assert "malformed Basic credentials" in log
        for secret in ("wrong-pw-1", "wrong-pw-2", "ops-pw", "app-pw", "old-pw"):
            assert secret not in log
        # Two Authorization fields: which one would count? Neither.
        status, _, _ = get(lb, "/metrics", basic("ops@admin:ops-pw"),
                           extra="Authorization: %s\r\n" % basic("app@admin:app-pw"))
        assert status == 400
        # Still served after all that; other paths are not guarded (nothing there).
        assert get(lb, "/metrics", basic("ops@admin:ops-pw"))[0] == 200
        assert get(lb, "/nope")[0] == 404
    finally:
        finish(lb)


def test_failures_in_a_row_are_delayed_and_a_success_resets(sim, users):
    lb = service(sim, users)
    try:
        for _ in range(2):
            refused(lb, "/metrics", basic("ops@admin:bad"))
        assert "answer delayed" not in lb.log()
        t0 = time.monotonic()
        refused(lb, "/metrics", basic("ops@admin:bad"))  # the third: 125 ms
        assert time.monotonic() - t0 >= 0.1
        t0 = time.monotonic()
        refused(lb, "/metrics", basic("ops@admin:bad"))  # the fourth: 250 ms
        assert time.monotonic() - t0 >= 0.2
        assert "4 failed in a row, answer delayed" in lb.log()
        # A connection that leaves while its answer waits costs nothing more.
        with http_connect(("127.0.0.1", lb.http_port)) as s:
            s.sendall(("GET /metrics HTTP/1.1\r\nAuthorization: %s\r\n\r\n"
                       % basic("ops@admin:bad")).encode())
        wait_for(lambda: "5 failed in a row" in lb.log(), what="the fifth failure")
        assert get(lb, "/metrics", basic("ops@admin:ops-pw"))[0] == 200
        refused(lb, "/metrics", basic("ops@admin:bad"))
        assert "; 1 failed in a row" in lb.log().split("5 failed in a row")[1]
    finally:
        finish(lb)


def test_a_success_is_cached_until_the_password_changes(sim, users):
    path, _ = users
    lb = service(sim, users, **{"mongolb.log_level": "debug"})
    try:
        good = basic("ops@admin:ops-pw")
        for _ in range(3):
            assert get(lb, "/metrics", good)[0] == 200
        # PBKDF2 ran once: the other two were answered from the cache.
        assert lb.log().count("ops@admin authenticated") == 1
        # Another spelling of the same user is other credentials: checked once more.
        assert get(lb, "/metrics", basic("ops:ops-pw"))[0] == 200
        assert lb.log().count("ops@admin authenticated") == 2
        # A new password in the auth_file ends the cached success of the old one.
        write_users(path, [make_verifier("ops@admin", "new-pw")])
        lb.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "read again" in lb.log(), what="the reload")
        refused(lb, "/metrics", good)
        assert get(lb, "/metrics", basic("ops@admin:new-pw"))[0] == 200
        # old@admin left the file: its success is gone too.
        refused(lb, "/metrics", basic("old@admin:old-pw"))
        assert "old@admin has no verifier in the auth_file" in lb.log()
    finally:
        finish(lb)


def test_http_auth_none_on_a_unix_socket(sim, users):
    sock = os.path.join(tempfile.mkdtemp(prefix="mongolb-admin-auth-"), "admin.sock")
    lb = service(sim, users, **{"admin.http_listen": "unix:" + sock, "admin.http_auth": "none"})
    lb.http_addr = sock
    try:
        assert os.stat(sock).st_mode & 0o777 == 0o660
        status, _, body = get(lb, "/metrics")
        assert status == 200 and b"mongolb_requests_total" in body
        assert get(lb, "/readyz")[0] in (200, 503)
    finally:
        finish(lb)


def test_none_refused_on_a_remote_address(users, tmp_path):
    path, pw = users
    conf = tmp_path / "m.ini"
    conf.write_text("[upstream]\nseeds = h:1\n[auth]\nmode = service\nauth_file = %s\n"
                    "service_user = admin\nservice_password_file = %s\n[admin]\n"
                    "http_listen = 0.0.0.0:9216\nhttp_allow_remote = true\nhttp_auth = none\n"
                    % (path, pw))
    r = subprocess.run([mongolb_binary(), "--check-config", "-c", str(conf)], capture_output=True,
                       timeout=30)
    assert r.returncode != 0
    assert b"http_auth: none, but http_listen has '0.0.0.0'" in r.stderr, r.stderr


def test_mode_off_changes_nothing(sim):
    # A simulator without users for mode = off.
    with start_sim("--mongos", "1") as plain:
        lb = AdminMongolb(plain.servers, {"mongolb.shutdown_timeout_ms": 1000})
        try:
            status, _, body = get(lb, "/metrics")
            assert status == 200 and b"mongolb_requests_total" in body
            # Credentials sent anyway are ignored.
            assert get(lb, "/readyz", basic("x@admin:y"))[0] == 200
            assert get(lb, "/healthz")[0] == 200
        finally:
            finish(lb)
