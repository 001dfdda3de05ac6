"""mongolb's command line outside the daemon: --make-verifier as an operator runs it (a password
typed at a terminal, or piped in; the mistakes it refuses), a bad MONGOLB_FAULT, and
--check-config's one line per problem."""
import os
import pty
import select
import subprocess
import tempfile
import time

from mongolb_harness import mongolb_binary


def run(args, stdin="", env=None):
    return subprocess.run([mongolb_binary()] + args, input=stdin, capture_output=True, text=True,
                          timeout=30, env=env)


def test_make_verifier_refuses_what_the_auth_file_cannot_take():
    """A name without a database, a name the auth_file cannot hold, an empty password and a
    SCRAM-SHA-256 password SASLprep is not done for: each is refused with the reason and no line
    is printed."""
    cases = [
        (["--make-verifier", "alice"], "pw\n", 2, "give USER@DB"),
        (["--make-verifier", "@admin"], "pw\n", 2, "give USER@DB"),
        (["--make-verifier", "alice@"], "pw\n", 2, "give USER@DB"),
        (["--make-verifier", "al ice@admin"], "pw\n", 2, "is not a user and database"),
        (["--make-verifier", "alice@ad min"], "pw\n", 2, "is not a user and database"),
        (["--make-verifier", "alice@admin"], "\n", 1, "no password on stdin"),
        (["--make-verifier", "alice@admin"], "", 1, "no password on stdin"),
        (["--make-verifier", "alice@admin"], "pässwört\n", 1, "SCRAM-SHA-256"),
    ]
    for args, stdin, rc, why in cases:
        out = run(args, stdin)
        assert out.returncode == rc, (args, stdin, out.returncode, out.stderr)
        assert why in out.stderr, (args, out.stderr)
        assert out.stdout == "", (args, out.stdout)
        # The password never comes back in a message.
        assert "pässwört" not in out.stderr


def test_make_verifier_at_a_terminal_asks_without_echo():
    """At a terminal, --make-verifier prompts for the password with echo off, restores the
    terminal, and prints the two verifier lines; the password does not appear on the terminal."""
    pid, fd = pty.fork()
    if pid == 0:
        os.execv(mongolb_binary(), [mongolb_binary(), "--make-verifier", "carol@admin"])
    seen = b""
    deadline = time.monotonic() + 20
    sent = False
    while time.monotonic() < deadline:
        r, _, _ = select.select([fd], [], [], 0.2)
        if r:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
        if not sent and b"password for carol@admin: " in seen:
            os.write(fd, b"t0p-secret\n")
            sent = True
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    text = seen.decode(errors="replace")
    assert sent, text
    assert os.waitstatus_to_exitcode(status) == 0, text
    assert "t0p-secret" not in text
    assert "carol@admin SCRAM-SHA-256 15000 " in text or "admin.carol SCRAM-SHA-256" in text, text
    assert "SCRAM-SHA-1" in text, text


def test_a_bad_fault_spec_stops_the_start():
    """MONGOLB_FAULT (tests only) that does not parse stops mongolb before anything starts, with
    the reason."""
    with tempfile.NamedTemporaryFile("w", suffix=".ini", delete=False) as f:
        f.write("[upstream]\nseeds = 127.0.0.1:1\n")
    try:
        env = dict(os.environ, MONGOLB_FAULT="no_such_point:1")
        out = run(["-c", f.name], env=env)
        assert out.returncode == 2, out.stderr
        assert "no_such_point" in out.stderr, out.stderr
    finally:
        os.unlink(f.name)


def test_check_config_prints_one_line_per_problem():
    """--check-config of a file whose auth_file is missing and readable by others names the file
    on each line of its report, one problem per line."""
    d = tempfile.mkdtemp(prefix="mongolb-cmdline-")
    users = os.path.join(d, "users.auth")
    with open(users, "w") as f:
        f.write("# no users yet\n")
    os.chmod(users, 0o644)
    conf = os.path.join(d, "m.ini")
    with open(conf, "w") as f:
        f.write("[upstream]\nseeds = 127.0.0.1:1\n[auth]\nmode = service\nauth_file = %s\n"
                "service_user = svc\nservice_password_file = %s\n"
                % (users, os.path.join(d, "missing.password")))
    out = run(["--check-config", "-c", conf])
    assert out.returncode == 1, out.stderr
    lines = [ln for ln in out.stderr.splitlines() if ln]
    assert lines, out.stderr
    for ln in lines:
        assert ln.startswith(conf + ": "), out.stderr
