"""Backend failures seen by a PyMongo application through mongolb: a read whose server drops the
connection is retried once on another server, and a write that cannot be retried comes back as an
error document (HostUnreachable) on a connection that stays open."""

import pymongo
import pytest
from pymongo.errors import AutoReconnect, OperationFailure

from mongolb_harness import cluster, wait_for  # noqa: F401  (cluster is a fixture)


def fail_command(cluster, i, commands, **data):
    data["failCommands"] = list(commands)
    cluster.sim_command({"configureFailPoint": "failCommand", "mode": "alwaysOn", "data": data}, i)


def fail_off(cluster, i):
    cluster.sim_command({"configureFailPoint": "failCommand", "mode": "off"}, i)


def test_read_retried_on_another_server(cluster):
    cluster.need_sim()
    client = pymongo.MongoClient(cluster.lb.uri, serverSelectionTimeoutMS=5000, retryReads=False)
    try:
        coll = client.test_retry.docs
        coll.insert_many([{"_id": i} for i in range(5)])
        fail_command(cluster, 0, ["find"], closeConnection=True)
        cluster.sim_stats(reset=True)
        before = cluster.lb.counters()
        for _ in range(40):
            assert len(list(coll.find({}))) == 5
        after = cluster.lb.counters()
        finds = cluster.command_counts("find")
        # Server 0 is picked for about a third of the finds (at least 3 of 40 but once in
        # about 50,000 runs); each find that reached it lost its connection there and was
        # retried once, on another server, where it succeeded.
        assert finds[0] >= 3, finds
        assert after["retries"] - before["retries"] == finds[0], (
            after["retries"] - before["retries"], finds)
        assert finds[1] + finds[2] == 40, finds
        assert after["errorsReturned"] == before["errorsReturned"]
    finally:
        fail_off(cluster, 0)
        client.close()


def test_write_failure_is_an_error_document(cluster):
    cluster.need_sim()
    client = pymongo.MongoClient(cluster.lb.uri, serverSelectionTimeoutMS=5000,
                                 retryWrites=False)
    try:
        coll = client.test_werr.docs
        coll.insert_one({"_id": 0})
        before = client.admin.command("mongolbStatus")["counters"]
        for i in range(len(cluster.sim.servers)):
            fail_command(cluster, i, ["insert"], closeConnection=True)
        try:
            with pytest.raises(OperationFailure) as ei:
                coll.insert_one({"_id": 1})
            assert not isinstance(ei.value, AutoReconnect)
            assert ei.value.code == 6  # HostUnreachable, as a mongos would say
        finally:
            for i in range(len(cluster.sim.servers)):
                fail_off(cluster, i)
        # The same client connection goes on working once the servers do.
        def all_known():  # asked on the client's own connection
            st = client.admin.command("mongolbStatus")
            return len(cluster.lb.known_servers(st)) == len(cluster.sim.servers)

        wait_for(all_known, what="servers known again")
        coll.insert_one({"_id": 2})
        assert coll.find_one({"_id": 2}) == {"_id": 2}
        after = client.admin.command("mongolbStatus")["counters"]
        assert after["errorsReturned"] > before["errorsReturned"]
        assert after["clientsAccepted"] == before["clientsAccepted"]
    finally:
        client.close()


def test_unlabelled_shutdown_error_of_a_mongos_is_retried_for_retryable_writes(cluster):
    """A mongos never labels its own errors RetryableWriteError (the server's rule), so a
    retryable write that gets ShutdownInProgress (91) from one mongos is retried by mongolb on
    another on the strength of the code, as the retryable-writes specification lists it; the
    application sees no error (found by the soak, where the driver then also dropped its whole
    pool to mongolb on the relayed 91)."""
    cluster.need_sim()
    client = pymongo.MongoClient(cluster.lb.uri, serverSelectionTimeoutMS=5000, retryWrites=True)
    try:
        coll = client.test_unlabelled.docs
        coll.drop()
        # Two of the three fail every insert: the third is always there to take the retry.
        for i in (0, 1):
            fail_command(cluster, i, ["insert"], errorCode=91, errorLabels=[])
        before = cluster.lb.counters()
        cluster.sim_stats(reset=True)
        for k in range(12):
            coll.insert_one({"_id": k})
        assert coll.count_documents({}) == 12
        after = cluster.lb.counters()
        counts = cluster.command_counts("insert")
        failed = counts[0] + counts[1]
        assert failed >= 1, "no insert reached a failing mongos"
        # Every insert that succeeded ran on the third mongos, once.
        assert counts[2] == 12, counts
        # Every failed attempt was either retried by mongolb, or (after its third attempt) came
        # back to the driver as an error document, which the driver retried: nothing else.
        retries = after["retries"] - before["retries"]
        errors = after["errorsReturned"] - before["errorsReturned"]
        assert retries >= 1, (retries, errors, counts)
        assert retries + errors == failed, (retries, errors, counts)
    finally:
        for i in range(3):
            fail_off(cluster, i)
        client.close()
