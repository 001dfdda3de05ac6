"""`make install` into a staging directory (DESTDIR), as a packager runs it: the tree it makes, the
unit with the binary's path written in, an existing configuration left alone, the man pages
readable by man(1) and listing every key, and `make uninstall` keeping the configuration."""

import os
import re
import shutil
import stat
import subprocess
import tempfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def make(*args):
    # B is where make install takes mongolb from: the tree the tests run against.
    binary = os.environ.get("MONGOLB")
    extra = []
    if binary:
        extra = ["B=" + os.path.relpath(os.path.dirname(os.path.abspath(binary)), ROOT)]
    r = subprocess.run(["make", "-s", "--no-print-directory", "-C", ROOT] + extra + list(args),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


@pytest.fixture
def destdir():
    d = tempfile.mkdtemp(prefix="mongolb-install-")
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def tree(d):
    out = set()
    for base, _, files in os.walk(d):
        for f in files:
            out.add(os.path.relpath(os.path.join(base, f), d))
    return out


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_install_default_prefix(destdir):
    make("install", "DESTDIR=" + destdir)
    assert tree(destdir) == {
        "usr/local/bin/mongolb",
        "usr/local/lib/systemd/system/mongolb.service",
        "etc/mongolb/mongolb.ini",
        "usr/local/share/man/man8/mongolb.8",
        "usr/local/share/man/man5/mongolb.ini.5",
    }
    binary = os.path.join(destdir, "usr/local/bin/mongolb")
    assert mode(binary) == 0o755
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10)
    assert out.returncode == 0 and out.stdout.startswith("mongolb "), out
    conf = os.path.join(destdir, "etc/mongolb/mongolb.ini")
    assert mode(conf) == 0o644  # the unit's transient user must read it; it holds no secret
    assert open(conf).read() == open(os.path.join(ROOT, "conf/mongolb.ini")).read()
    unit = open(os.path.join(destdir, "usr/local/lib/systemd/system/mongolb.service")).read()
    assert "ExecStart=/usr/local/bin/mongolb -c /etc/mongolb/mongolb.ini" in unit
    # The installed example needs only its seeds to start.
    r = subprocess.run([binary, "--check-config", "-c", conf], capture_output=True, text=True,
                       timeout=10)
    assert "seeds" in r.stderr or r.returncode == 0, r


def test_install_paths_are_substituted_and_a_configuration_is_kept(destdir):
    etc = os.path.join(destdir, "opt/etc/mongolb")
    os.makedirs(etc)
    mine = "[upstream]\nseeds = db1:27017\n"
    with open(os.path.join(etc, "mongolb.ini"), "w") as f:
        f.write(mine)
    out = make("install", "DESTDIR=" + destdir, "PREFIX=/opt/mlb", "SYSCONFDIR=/opt/etc",
               "BINDIR=/opt/bin", "MANDIR=/opt/man")
    assert "exists: kept" in out, out
    assert open(os.path.join(etc, "mongolb.ini")).read() == mine
    assert os.path.exists(os.path.join(etc, "mongolb.ini.example"))
    assert os.path.exists(os.path.join(destdir, "opt/bin/mongolb"))
    assert os.path.exists(os.path.join(destdir, "opt/man/man8/mongolb.8"))
    unit = open(os.path.join(destdir, "opt/mlb/lib/systemd/system/mongolb.service")).read()
    for line in unit.splitlines():
        if line.startswith(("ExecStart=", "ExecStartPre=")):
            assert "/opt/bin/mongolb" in line and "/opt/etc/mongolb/mongolb.ini" in line, line
    assert "/usr/local/bin" not in unit
    # An unprivileged install touches nothing outside DESTDIR, and uninstall keeps the
    # configuration.
    make("uninstall", "DESTDIR=" + destdir, "PREFIX=/opt/mlb", "SYSCONFDIR=/opt/etc",
         "BINDIR=/opt/bin", "MANDIR=/opt/man")
    assert tree(destdir) == {"opt/etc/mongolb/mongolb.ini", "opt/etc/mongolb/mongolb.ini.example"}


def man_text(path):
    if not shutil.which("man"):
        pytest.skip("man is not installed")
    env = dict(os.environ, MANWIDTH="100", MAN_KEEP_FORMATTING="0")
    r = subprocess.run(["man", "--warnings", "-l", path], capture_output=True, text=True,
                       timeout=60, env=env)
    assert r.returncode == 0, r.stderr
    assert not r.stderr.strip(), "man(1) warnings: " + r.stderr
    return re.sub(r".\x08", "", r.stdout)


def test_man_pages_render_and_list_every_key(destdir):
    make("install", "DESTDIR=" + destdir)
    page8 = man_text(os.path.join(destdir, "usr/local/share/man/man8/mongolb.8"))
    for words in ("--check-config", "SIGHUP", "READY=1", "WATCHDOG=1", "mongolbStatus"):
        assert words in page8, words
    page5 = man_text(os.path.join(destdir, "usr/local/share/man/man5/mongolb.ini.5"))
    # Every key of the example configuration (which a unit test holds equal to the key table).
    keys = set(re.findall(r"^;? ?(\w+) =", open(os.path.join(ROOT, "conf/mongolb.ini")).read(),
                          re.M))
    assert len(keys) > 30
    for key in keys:
        assert re.search(r"^\s+%s = " % key, page5, re.M), "mongolb.ini(5) lacks " + key
    assert "Needs a restart." in page5
