"""mongosim's transactions as MongoDB's: snapshot isolation, WriteConflict, rollback of writes a
dead primary had not replicated, and majority read concern. PyMongo connects to the simulator
directly; each test names what a real server does and the simulator checks it."""

import pymongo
import pytest
from pymongo.errors import OperationFailure
from pymongo.read_concern import ReadConcern
from pymongo.write_concern import WriteConcern

from harness import start_sim


def client_of(sim, **kw):
    kw.setdefault("serverSelectionTimeoutMS", 5000)
    return pymongo.MongoClient(sim.uri(), **kw)


@pytest.fixture(params=["mongos", "replset"])
def deployment(request):
    args = ("--mongos", "2") if request.param == "mongos" else ("--replset", "rs0",
                                                                "--members", "3")
    with start_sim(*args) as sim:
        client = client_of(sim)
        try:
            yield client
        finally:
            client.close()


def test_a_transaction_reads_its_snapshot_and_others_do_not_see_its_writes(deployment):
    """Reads in a transaction see the data as of its first statement, plus its own writes;
    nobody else sees its writes until it commits."""
    coll = deployment.t_iso.c
    coll.drop()
    coll.insert_many([{"_id": 1, "v": "before"}, {"_id": 2, "v": "before"}])
    with deployment.start_session() as s:
        s.start_transaction()
        assert coll.find_one({"_id": 1}, session=s) == {"_id": 1, "v": "before"}
        # Outside the transaction, a document changes and another is added.
        coll.update_one({"_id": 2}, {"$set": {"v": "after"}})
        coll.insert_one({"_id": 3})
        # The transaction still reads its snapshot.
        assert coll.find_one({"_id": 2}, session=s) == {"_id": 2, "v": "before"}
        assert coll.count_documents({}, session=s) == 2
        coll.insert_one({"_id": 10, "v": "txn"}, session=s)
        coll.update_one({"_id": 1}, {"$set": {"v": "txn"}}, session=s)
        assert coll.find_one({"_id": 10}, session=s) == {"_id": 10, "v": "txn"}
        # Its writes are invisible outside it.
        assert coll.find_one({"_id": 10}) is None
        assert coll.find_one({"_id": 1}) == {"_id": 1, "v": "before"}
        s.commit_transaction()
    assert coll.find_one({"_id": 10}) == {"_id": 10, "v": "txn"}
    assert coll.find_one({"_id": 1}) == {"_id": 1, "v": "txn"}
    # The write made outside it is kept.
    assert coll.find_one({"_id": 2}) == {"_id": 2, "v": "after"}
    assert sorted(d["_id"] for d in coll.find()) == [1, 2, 3, 10]


def test_an_aborted_transaction_leaves_nothing(deployment):
    coll = deployment.t_abort.c
    coll.drop()
    coll.insert_one({"_id": 1})
    with deployment.start_session() as s:
        s.start_transaction()
        coll.insert_one({"_id": 2}, session=s)
        coll.delete_one({"_id": 1}, session=s)
        deployment.t_abort.created_in_txn.insert_one({"_id": 1}, session=s)
        s.abort_transaction()
    assert sorted(d["_id"] for d in coll.find()) == [1]
    assert "created_in_txn" not in deployment.t_abort.list_collection_names()


def assert_write_conflict(e):
    assert e.code == 112 and e.details["codeName"] == "WriteConflict", e.details
    assert e.has_error_label("TransientTransactionError"), e.details


def test_two_transactions_writing_one_document_conflict(deployment):
    """The second transaction to write a document another open transaction wrote gets
    WriteConflict (112) with TransientTransactionError, and is aborted; the first commits."""
    coll = deployment.t_wc.c
    coll.drop()
    coll.insert_one({"_id": 1, "n": 0})
    with deployment.start_session() as a, deployment.start_session() as b:
        a.start_transaction()
        b.start_transaction()
        coll.update_one({"_id": 1}, {"$inc": {"n": 1}}, session=a)
        with pytest.raises(OperationFailure) as e:
            coll.update_one({"_id": 1}, {"$inc": {"n": 10}}, session=b)
        assert_write_conflict(e.value)
        # b is aborted: its next statement gets NoSuchTransaction.
        with pytest.raises(OperationFailure) as e:
            coll.find_one({"_id": 1}, session=b)
        assert e.value.code == 251, e.value.details
        b.abort_transaction()
        a.commit_transaction()
    assert coll.find_one({"_id": 1}) == {"_id": 1, "n": 1}


def test_a_transaction_writing_a_document_changed_since_its_snapshot_conflicts(deployment):
    coll = deployment.t_wc2.c
    coll.drop()
    coll.insert_many([{"_id": 1, "n": 0}, {"_id": 2}])
    with deployment.start_session() as a:
        a.start_transaction()
        coll.find_one({"_id": 2}, session=a)  # the snapshot is taken here
        coll.update_one({"_id": 1}, {"$set": {"n": 5}})  # outside, after the snapshot
        with pytest.raises(OperationFailure) as e:
            coll.update_one({"_id": 1}, {"$inc": {"n": 1}}, session=a)
        assert_write_conflict(e.value)
        a.abort_transaction()
    assert coll.find_one({"_id": 1}) == {"_id": 1, "n": 5}


def test_with_transaction_retries_a_write_conflict(deployment):
    """The driver's with_transaction runs the transaction again on TransientTransactionError:
    the conflicting update is applied once, on top of the other write."""
    coll = deployment.t_wc3.c
    coll.drop()
    coll.insert_one({"_id": 1, "n": 0})
    attempts = []

    def callback(session):
        attempts.append(1)
        coll.find_one({"_id": 1}, session=session)
        if len(attempts) == 1:
            coll.update_one({"_id": 1}, {"$inc": {"n": 100}})
        coll.update_one({"_id": 1}, {"$inc": {"n": 1}}, session=session)

    with deployment.start_session() as s:
        s.with_transaction(callback)
    assert len(attempts) == 2
    assert coll.find_one({"_id": 1}) == {"_id": 1, "n": 101}
