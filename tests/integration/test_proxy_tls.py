"""TLS through mongolb (issue 9), with PyMongo: applications to mongolb and mongolb to the
servers, each leg on its own and both together; the refusals (wrong CA, expired certificate,
wrong host name, missing client certificate, plaintext on a TLS-only port) each fail on the side
that should refuse and break nothing else; certificates renewed with SIGHUP while a workload
runs; a handshake that stalls is cut off by connect_timeout_ms.

Certificates are made at test time (tls_certs.py); mongosim's TLS listener was checked against
the drivers directly first (test_sim_tls.py).
"""

import os
import shutil
import signal
import socket
import ssl
import threading
import time

import pymongo
import pytest

from harness import send_msg, start_sim
from mongolb_harness import start_mongolb, wait_for
from tls_certs import _leaf, _SERVER_EXT, tls_certs  # noqa: F401  (tls_certs is a fixture)


def app_side(certs, **extra):
    """mongolb's [mongolb] keys for TLS towards applications, tls_mode require."""
    cfg = {"mongolb.tls_mode": "require",
           "mongolb.tls_certificate_key_file": certs.server}
    cfg.update(extra)
    return cfg


def server_side(certs, ca=None, **extra):
    """mongolb's [upstream] keys for TLS towards the servers."""
    cfg = {"upstream.tls": "true", "upstream.tls_ca_file": ca or certs.ca}
    cfg.update(extra)
    return cfg


def tls_sim(certs, *args, cert=None):
    return start_sim(*(args + ("--tls-cert", cert or certs.server)), tls_ca=certs.ca)


def check_clean_exit(lb):
    code = lb.stop()
    log = lb.log()
    assert code == 0, "mongolb exited with %s:\n%s" % (code, lb.log_tail())
    assert "AddressSanitizer" not in log and "runtime error:" not in log


def workload(client, db="tls_work"):
    """Cursors, a transaction and counts: what the other suites do, over whatever legs."""
    coll = client[db].docs
    coll.drop()
    coll.insert_many([{"_id": i, "v": i % 7} for i in range(300)])
    assert sum(1 for _ in coll.find({}, batch_size=25)) == 300
    assert coll.count_documents({"v": 3}) == len([i for i in range(300) if i % 7 == 3])
    with client.start_session() as s:
        s.with_transaction(lambda session: coll.insert_one({"_id": "txn"}, session=session))
    assert coll.find_one({"_id": "txn"}) == {"_id": "txn"}


def test_tls_on_both_legs(tls_certs):
    certs = tls_certs
    with tls_sim(certs, "--mongos", "2") as sim:
        cfg = app_side(certs)
        cfg.update(server_side(certs))
        lb = start_mongolb(sim.servers, config=cfg, tls_ca=certs.ca)
        try:
            client = pymongo.MongoClient(lb.uri, serverSelectionTimeoutMS=5000)
            try:
                workload(client)
            finally:
                client.close()
            st = lb.status()
            assert st["counters"]["tlsHandshakeFailures"] == 0
            assert all(s["type"] == "Mongos" for s in st["servers"])
        finally:
            check_clean_exit(lb)


def test_tls_towards_apps_only_and_towards_servers_only(tls_certs):
    certs = tls_certs
    with start_sim("--mongos", "2") as plain, tls_sim(certs, "--mongos", "2") as secure:
        lb = start_mongolb(plain.servers, config=app_side(certs), tls_ca=certs.ca)
        try:
            client = pymongo.MongoClient(lb.uri, serverSelectionTimeoutMS=5000)
            try:
                workload(client, "tls_app_only")
            finally:
                client.close()
        finally:
            check_clean_exit(lb)
        lb = start_mongolb(secure.servers, config=server_side(certs))
        try:
            client = pymongo.MongoClient(lb.uri, serverSelectionTimeoutMS=5000)
            try:
                workload(client, "tls_server_only")
            finally:
                client.close()
        finally:
            check_clean_exit(lb)


def test_plaintext_client_on_a_tls_only_port_is_closed(tls_certs):
    certs = tls_certs
    with start_sim("--mongos", "1") as sim:
        lb = start_mongolb(sim.servers, config=app_side(certs), tls_ca=certs.ca)
        try:
            with socket.create_connection(("127.0.0.1", lb.port), timeout=5) as s:
                send_msg(s, {"hello": 1, "$db": "admin"}, request_id=1)
                assert s.recv(100) == b"", "a plaintext client got an answer on a TLS-only port"
            wait_for(lambda: "plaintext client on a TLS-only port" in lb.log(), timeout=5,
                     what="the log line")
            # TLS clients are served all along.
            assert lb.status()["ok"] == 1
        finally:
            check_clean_exit(lb)


def test_prefer_mode_takes_tls_and_plaintext_clients(tls_certs):
    certs = tls_certs
    with start_sim("--mongos", "1") as sim:
        lb = start_mongolb(sim.servers, config=app_side(certs, **{"mongolb.tls_mode": "prefer"}))
        try:
            plain = pymongo.MongoClient(lb.uri, serverSelectionTimeoutMS=5000)
            secure = pymongo.MongoClient(lb.uri + "?tls=true&tlsCAFile=" + certs.ca,
                                         serverSelectionTimeoutMS=5000)
            try:
                plain.tls_prefer.c.insert_one({"_id": 1})
                assert secure.tls_prefer.c.find_one({"_id": 1}) == {"_id": 1}
            finally:
                plain.close()
                secure.close()
        finally:
            check_clean_exit(lb)


def test_client_refuses_a_mongolb_certificate_from_another_ca(tls_certs):
    certs = tls_certs
    with start_sim("--mongos", "1") as sim:
        lb = start_mongolb(sim.servers, config=app_side(certs), tls_ca=certs.ca)
        try:
            wrong = pymongo.MongoClient("mongodb://127.0.0.1:%d/?tls=true&tlsCAFile=%s"
                                        % (lb.port, certs.other_ca),
                                        serverSelectionTimeoutMS=1500)
            try:
                with pytest.raises(pymongo.errors.ServerSelectionTimeoutError) as e:
                    wrong.admin.command("ping")
                assert "certificate verify failed" in str(e.value), str(e.value)
            finally:
                wrong.close()
            good = pymongo.MongoClient(lb.uri, serverSelectionTimeoutMS=5000)
            try:
                assert good.admin.command("ping")["ok"] == 1
            finally:
                good.close()
        finally:
            check_clean_exit(lb)


def test_client_certificates_required(tls_certs):
    certs = tls_certs
    cfg = app_side(certs, **{"mongolb.tls_client_certificates": "required",
                             "mongolb.tls_ca_file": certs.ca})
    with start_sim("--mongos", "1") as sim:
        lb = start_mongolb(sim.servers, config=cfg, tls_ca=certs.ca, tls_client=certs.client)
        try:
            without = pymongo.MongoClient("mongodb://127.0.0.1:%d/?tls=true&tlsCAFile=%s"
                                          % (lb.port, certs.ca), serverSelectionTimeoutMS=1500)
            try:
                with pytest.raises(pymongo.errors.PyMongoError):
                    without.admin.command("ping")
            finally:
                without.close()
            other = pymongo.MongoClient(lb.uri.replace(certs.client, certs.other_client),
                                        serverSelectionTimeoutMS=1500)
            try:
                with pytest.raises(pymongo.errors.PyMongoError):
                    other.admin.command("ping")
            finally:
                other.close()
            good = pymongo.MongoClient(lb.uri, serverSelectionTimeoutMS=5000)
            try:
                good.tls_certs.c.insert_one({"_id": 1})
            finally:
                good.close()
            assert lb.status()["counters"]["tlsHandshakeFailures"] >= 2
        finally:
            check_clean_exit(lb)


@pytest.mark.parametrize("case", ["wrong_ca", "expired", "wrong_host"])
def test_mongolb_refuses_a_bad_server_certificate(tls_certs, case):
    certs = tls_certs
    cert = {"wrong_ca": certs.server, "expired": certs.expired,
            "wrong_host": certs.wrong_host}[case]
    ca = certs.other_ca if case == "wrong_ca" else certs.ca
    # OpenSSL's own words, as mongolb logs them and reports them in lastError (the seeds are IP
    # addresses, so a certificate for another name is an "IP address mismatch").
    expect = {"wrong_ca": "certificate verification failed",
              "expired": "certificate has expired",
              "wrong_host": "address mismatch"}[case]
    with tls_sim(certs, "--mongos", "1", cert=cert) as sim:
        lb = start_mongolb(sim.servers, config=server_side(certs, ca=ca), expect_known=0)
        try:
            def refused():
                st = lb.status()
                s = st["servers"][0]
                return (s["type"] == "Unknown" and expect in s.get("lastError", "")
                        and st["counters"]["tlsHandshakeFailures"] > 0)
            wait_for(refused, timeout=10, what="the server refused with '%s'" % expect)
            assert expect in lb.log()
            # An application gets a clean error, not a hang or a dropped socket.
            client = pymongo.MongoClient(lb.uri, serverSelectionTimeoutMS=5000)
            try:
                with pytest.raises(pymongo.errors.PyMongoError):
                    client.tls_refused.c.insert_one({"_id": 1})
            finally:
                client.close()
        finally:
            check_clean_exit(lb)


def test_allow_invalid_hostnames_accepts_the_wrong_name_with_a_warning(tls_certs):
    certs = tls_certs
    with tls_sim(certs, "--mongos", "1", cert=certs.wrong_host) as sim:
        cfg = server_side(certs, **{"upstream.tls_allow_invalid_hostnames": "true"})
        lb = start_mongolb(sim.servers, config=cfg)
        try:
            assert "tls_allow_invalid_hostnames" in lb.log()
            client = pymongo.MongoClient(lb.uri, serverSelectionTimeoutMS=5000)
            try:
                client.tls_host.c.insert_one({"_id": 1})
            finally:
                client.close()
        finally:
            check_clean_exit(lb)


def peer_certificate(port, ca):
    ctx = ssl.create_default_context(cafile=ca)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
            return s.getpeercert(binary_form=True)


def test_renewed_certificate_is_served_after_sighup_while_a_workload_runs(tls_certs, tmp_path):
    certs = tls_certs
    live = str(tmp_path / "live.pem")
    shutil.copy(certs.server, live)
    renewed = _leaf(certs.dir, "renewed-%d" % os.getpid(), "localhost",
                    _SERVER_EXT.format(san="IP:127.0.0.1, DNS:localhost"), certs.ca,
                    os.path.join(certs.dir, "ca.key"))
    with start_sim("--mongos", "2") as sim:
        cfg = app_side(certs, **{"mongolb.tls_certificate_key_file": live})
        lb = start_mongolb(sim.servers, config=cfg, tls_ca=certs.ca)
        try:
            before = peer_certificate(lb.port, certs.ca)
            client = pymongo.MongoClient(lb.uri, serverSelectionTimeoutMS=5000, maxPoolSize=4)
            errors, done = [], threading.Event()

            def work():
                i = 0
                while not done.is_set():
                    try:
                        client.tls_reload.c.insert_one({"i": i})
                        client.tls_reload.c.find_one({"i": i})
                    except Exception as e:  # noqa: BLE001  (counted below)
                        errors.append(repr(e))
                    i += 1

            threads = [threading.Thread(target=work) for _ in range(3)]
            for t in threads:
                t.start()
            time.sleep(0.5)
            # A broken file first: the running certificate stays, with a log line.
            with open(live, "w") as f:
                f.write("not a certificate\n")
            lb.proc.send_signal(signal.SIGHUP)
            wait_for(lambda: "keeping the running TLS" in lb.log(), timeout=5,
                     what="the reload refusing a broken file")
            assert peer_certificate(lb.port, certs.ca) == before
            shutil.copy(renewed, live)
            lb.proc.send_signal(signal.SIGHUP)
            wait_for(lambda: peer_certificate(lb.port, certs.ca) != before, timeout=5,
                     what="the renewed certificate served")
            time.sleep(0.5)
            done.set()
            for t in threads:
                t.join(10)
            client.close()
            assert errors == [], errors[:3]
        finally:
            check_clean_exit(lb)


def test_a_handshake_that_stalls_is_cut_off_by_connect_timeout(tls_certs):
    certs = tls_certs
    with start_sim("--mongos", "1") as sim:
        cfg = app_side(certs, **{"upstream.connect_timeout_ms": "1000"})
        lb = start_mongolb(sim.servers, config=cfg, tls_ca=certs.ca)
        try:
            with socket.create_connection(("127.0.0.1", lb.port), timeout=6) as s:
                s.sendall(b"\x16\x03\x01\x00")  # the start of a TLS record, then nothing
                t0 = time.monotonic()
                assert s.recv(100) == b""
                assert time.monotonic() - t0 < 4
            wait_for(lambda: "no TLS handshake within" in lb.log(), timeout=3,
                     what="the log line")
        finally:
            check_clean_exit(lb)
