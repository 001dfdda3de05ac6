"""Test certificates for mongosim's TLS listener, made at test time with the openssl command line
(nothing is shipped in the repository).

    certs = make_certs(directory)       # or the session-wide pytest fixture `tls_certs`
    start_sim("--mongos", "2", "--tls-cert", certs.server)

Everything uses EC P-256 keys, so a whole set takes a fraction of a second. The files:

    ca               CA certificate (PEM) that signed server, client, expired and wrong_host
    server           server certificate + key, SAN IP:127.0.0.1 and DNS:localhost
    client           client certificate + key (extendedKeyUsage clientAuth), signed by ca
    expired          server certificate + key for the right names, expired a day ago
    wrong_host       server certificate + key for wrong.example only
    other_ca         a second CA, unrelated to ca
    other_client     client certificate + key signed by other_ca

Run as a script (python3 tls_certs.py DIR), it writes the set into DIR and prints the paths as
one JSON object, which is how the Node.js tests get the same certificates.
"""

import json
import os
import subprocess
import sys
import tempfile
from types import SimpleNamespace

try:
    import pytest
except ImportError:  # the script form does not need pytest
    pytest = None

# A configuration of our own, so that nothing from the system's openssl.cnf (default extensions,
# prompts) slips into the certificates.
_CONFIG = """\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
"""

_SERVER_EXT = """\
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = {san}
"""

_CLIENT_EXT = """\
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
"""


def _openssl(*args, cwd):
    subprocess.run(["openssl"] + list(args), cwd=cwd, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.PIPE)


def _key(d, name):
    path = os.path.join(d, name + ".key")
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", path,
             cwd=d)
    return path


def _ca(d, name, cn):
    key = _key(d, name)
    pem = os.path.join(d, name + ".pem")
    _openssl("req", "-x509", "-new", "-config", "openssl.cnf", "-key", key, "-subj", "/CN=" + cn,
             "-days", "2", "-sha256",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign",
             "-out", pem, cwd=d)
    return pem, key


_serial = [1000]


def _leaf(d, name, cn, ext, ca_pem, ca_key, days=2):
    """Signs a new key's certificate with the CA and writes name.pem: certificate then key, the
    layout of mongod's tlsCertificateKeyFile and of drivers' tlsCertificateKeyFile."""
    key = _key(d, name)
    csr = os.path.join(d, name + ".csr")
    crt = os.path.join(d, name + ".crt")
    extfile = os.path.join(d, name + ".ext")
    with open(extfile, "w") as f:
        f.write(ext)
    _openssl("req", "-new", "-config", "openssl.cnf", "-key", key, "-subj", "/CN=" + cn,
             "-out", csr, cwd=d)
    _serial[0] += 1
    # A negative -days makes notAfter fall before now (notBefore is now): an expired
    # certificate without faking the clock.
    _openssl("x509", "-req", "-in", csr, "-CA", ca_pem, "-CAkey", ca_key,
             "-set_serial", str(_serial[0]), "-days", str(days), "-sha256",
             "-extfile", extfile, "-out", crt, cwd=d)
    pem = os.path.join(d, name + ".pem")
    with open(pem, "w") as out:
        for part in (crt, key):
            with open(part) as f:
                out.write(f.read())
    return pem


def make_certs(directory):
    """Writes the whole set into directory (which must exist) and returns its paths."""
    d = os.path.abspath(directory)
    with open(os.path.join(d, "openssl.cnf"), "w") as f:
        f.write(_CONFIG)
    ca, ca_key = _ca(d, "ca", "mongosim test CA")
    other_ca, other_key = _ca(d, "other-ca", "unrelated test CA")
    good_san = _SERVER_EXT.format(san="IP:127.0.0.1, DNS:localhost")
    return SimpleNamespace(
        dir=d,
        ca=ca,
        server=_leaf(d, "server", "localhost", good_san, ca, ca_key),
        client=_leaf(d, "client", "mongosim-client", _CLIENT_EXT, ca, ca_key),
        expired=_leaf(d, "expired", "localhost", good_san, ca, ca_key, days=-1),
        wrong_host=_leaf(d, "wrong-host", "wrong.example",
                         _SERVER_EXT.format(san="DNS:wrong.example"), ca, ca_key),
        other_ca=other_ca,
        other_client=_leaf(d, "other-client", "mongosim-client", _CLIENT_EXT, other_ca,
                           other_key),
    )


if pytest is not None:
    @pytest.fixture(scope="session")
    def tls_certs(tmp_path_factory):
        """One certificate set for the whole test session."""
        return make_certs(str(tmp_path_factory.mktemp("tls")))


if __name__ == "__main__":
    target = sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="mongosim-tls-")
    os.makedirs(target, exist_ok=True)
    print(json.dumps(vars(make_certs(target))))
