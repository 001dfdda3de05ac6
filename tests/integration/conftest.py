"""pytest configuration shared by mongolb's integration tests: makes harness importable and
offers simulator fixtures. Tests run with Debian's /usr/bin/python3 and PyMongo 3.11."""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import start_sim  # noqa: E402


@pytest.fixture
def replset():
    """A three-member replica set "rs0" with tags on its members."""
    with start_sim("--replset", "rs0", "--members", "3",
                   "--tags", "dc=ny;dc=ny,rack=2;dc=sf") as sim:
        yield sim


@pytest.fixture
def mongos2():
    """Two mongos routers sharing one store."""
    with start_sim("--mongos", "2") as sim:
        yield sim


@pytest.fixture
def standalone():
    with start_sim("--standalone") as sim:
        yield sim
