# -*- test-case-name: estwisted.client.test.test_transactions -*-
"""
Tests for transactions across reconnections and failovers: a transaction
lives in one node's memory, so it is bound to the connection it was
started on; a write or commit whose answer may be lost is never sent
again; a commit waits for the writes in flight and refuses when one of
them failed.  A L{Clock} and in-memory transports.
"""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from estwisted.client import (
    ConnectionSettings,
    ExpectedVersion,
    InvalidTransaction,
    TransactionCommitUnknown,
    TransactionLost,
)
from estwisted.client.test.fakes import FakeServerConnection
from estwisted.client.test.test_connection import LEADER, event, make
from estwisted.wire import messages_pb2 as pb
from estwisted.wire.tcpcodec import TcpCommand

SETTINGS = ConnectionSettings(
    reconnection_delay=0.1, operation_timeout=1.0, heartbeat_interval=60, heartbeat_timeout=60
)


def of(server: FakeServerConnection, command: int) -> list[Any]:
    return [p for p in server.packages() if p.command == command]


def answer(server: FakeServerConnection, package: Any, command: int, message: Any) -> None:
    server.send(command, package.correlation_id, message.SerializeToString())


class TransactionFailoverTests(SynchronousTestCase):
    def started(self, transaction_id: int = 7) -> tuple[Any, Any, Any, Any]:
        connection, clock, network = make(SETTINGS)
        connection.connect()
        network.last.identify()
        d = connection.start_transaction("tx", ExpectedVersion.NO_STREAM)
        (start,) = of(network.last, TcpCommand.TransactionStart)
        answer(
            network.last, start, TcpCommand.TransactionStartCompleted,
            pb.TransactionStartCompleted(transaction_id=transaction_id, result=pb.Success),
        )
        return connection, clock, network, self.successResultOf(d)

    def reconnect(self, clock: Any, network: Any) -> None:
        network.last.drop()
        clock.advance(0.1)
        network.last.identify()

    def test_write_after_reconnection_is_lost(self) -> None:
        """
        After a reconnection the transaction is gone: writes and the commit
        fail with L{TransactionLost} and nothing is sent to the node.
        """
        connection, clock, network, transaction = self.started()
        self.reconnect(clock, network)
        failure = self.failureResultOf(transaction.write([event()]), TransactionLost)
        self.assertEqual(failure.value.transaction_id, 7)
        self.failureResultOf(transaction.commit(), TransactionLost)
        sent = [p.command for p in network.last.packages()]
        self.assertNotIn(TcpCommand.TransactionWrite, sent)
        self.assertNotIn(TcpCommand.TransactionCommit, sent)

    def test_write_in_flight_when_connection_lost(self) -> None:
        """
        A write in flight when the connection drops is not sent again (it
        may have reached the node): L{TransactionLost}, and the commit is
        refused without being sent.
        """
        connection, clock, network, transaction = self.started()
        write = transaction.write([event(), event()])
        self.assertEqual(len(of(network.last, TcpCommand.TransactionWrite)), 1)
        self.reconnect(clock, network)
        self.failureResultOf(write, TransactionLost)
        self.failureResultOf(transaction.commit(), TransactionLost)
        self.assertEqual(of(network.last, TcpCommand.TransactionWrite), [])
        self.assertEqual(of(network.last, TcpCommand.TransactionCommit), [])

    def test_commit_in_flight_when_connection_lost(self) -> None:
        """
        A commit whose answer was lost fails with
        L{TransactionCommitUnknown}, carrying what settles it (the events,
        the stream, the expected version); it is not sent again.
        """
        connection, clock, network, transaction = self.started()
        events = [event(), event()]
        write = transaction.write(events)
        (package,) = of(network.last, TcpCommand.TransactionWrite)
        answer(
            network.last, package, TcpCommand.TransactionWriteCompleted,
            pb.TransactionWriteCompleted(transaction_id=7, result=pb.Success),
        )
        self.successResultOf(write)
        commit = transaction.commit()
        self.assertEqual(len(of(network.last, TcpCommand.TransactionCommit)), 1)
        self.reconnect(clock, network)
        failure = self.failureResultOf(commit, TransactionCommitUnknown)
        self.assertEqual(failure.value.events, tuple(events))
        self.assertEqual(failure.value.stream, "tx")
        self.assertEqual(failure.value.expected_version, ExpectedVersion.NO_STREAM)
        self.assertEqual(of(network.last, TcpCommand.TransactionCommit), [])

    def test_commit_timeout_not_resent(self) -> None:
        connection, clock, network, transaction = self.started()
        commit = transaction.commit()
        self.assertEqual(len(of(network.last, TcpCommand.TransactionCommit)), 1)
        clock.advance(1.0)
        self.failureResultOf(commit, TransactionCommitUnknown)
        self.assertEqual(of(network.last, TcpCommand.TransactionCommit), [])

    def test_commit_timeout_answer_not_resent(self) -> None:
        """
        A server C{CommitTimeout} leaves the outcome unknown too.
        """
        connection, clock, network, transaction = self.started()
        commit = transaction.commit()
        (package,) = of(network.last, TcpCommand.TransactionCommit)
        answer(
            network.last, package, TcpCommand.TransactionCommitCompleted,
            pb.TransactionCommitCompleted(
                transaction_id=7, result=pb.CommitTimeout, first_event_number=0,
                last_event_number=0,
            ),
        )
        self.failureResultOf(commit, TransactionCommitUnknown)
        clock.advance(1.0)
        self.assertEqual(of(network.last, TcpCommand.TransactionCommit), [])

    def test_not_master_on_commit(self) -> None:
        """
        C{NotMaster} for a commit: not handled, so not committed, and the
        transaction lives on a node that no longer leads: L{TransactionLost};
        the client moves to the leader and sends nothing of it there.
        """
        connection, clock, network, transaction = self.started()
        commit = transaction.commit()
        (package,) = of(network.last, TcpCommand.TransactionCommit)
        network.last.not_master(package, LEADER)
        self.failureResultOf(commit, TransactionLost)
        clock.advance(0.1)
        self.assertEqual(network.last.node, LEADER)
        network.last.identify()
        self.assertEqual(of(network.last, TcpCommand.TransactionCommit), [])

    def test_not_ready_write_retried(self) -> None:
        """
        C{NotReady} means not handled: the write is sent again on the same
        connection.
        """
        connection, clock, network, transaction = self.started()
        write = transaction.write([event()])
        (package,) = of(network.last, TcpCommand.TransactionWrite)
        network.last.send(
            TcpCommand.NotHandled, package.correlation_id,
            pb.NotHandled(reason=pb.NotHandled.NotReady).SerializeToString(),
        )
        clock.advance(0.1)
        (again,) = of(network.last, TcpCommand.TransactionWrite)
        self.assertEqual(again.data, package.data)
        answer(
            network.last, again, TcpCommand.TransactionWriteCompleted,
            pb.TransactionWriteCompleted(transaction_id=7, result=pb.Success),
        )
        self.successResultOf(write)

    def test_commit_waits_for_writes(self) -> None:
        """
        The commit is sent once the writes in flight are answered; when one
        of them failed it is refused and not sent.
        """
        connection, clock, network, transaction = self.started()
        ok = transaction.write([event()])
        bad = transaction.write([event()])
        commit = transaction.commit()
        first, second = of(network.last, TcpCommand.TransactionWrite)
        self.assertEqual(of(network.last, TcpCommand.TransactionCommit), [])
        answer(
            network.last, first, TcpCommand.TransactionWriteCompleted,
            pb.TransactionWriteCompleted(transaction_id=7, result=pb.Success),
        )
        answer(
            network.last, second, TcpCommand.TransactionWriteCompleted,
            pb.TransactionWriteCompleted(transaction_id=7, result=pb.AccessDenied),
        )
        self.successResultOf(ok)
        self.failureResultOf(bad)
        failure = self.failureResultOf(commit, InvalidTransaction)
        self.assertIn("a write failed", str(failure.value))
        self.assertEqual(of(network.last, TcpCommand.TransactionCommit), [])

    def test_commit_after_writes(self) -> None:
        connection, clock, network, transaction = self.started()
        write = transaction.write([event()])
        commit = transaction.commit()
        (package,) = of(network.last, TcpCommand.TransactionWrite)
        answer(
            network.last, package, TcpCommand.TransactionWriteCompleted,
            pb.TransactionWriteCompleted(transaction_id=7, result=pb.Success),
        )
        self.successResultOf(write)
        (package,) = of(network.last, TcpCommand.TransactionCommit)
        self.assertEqual(pb.TransactionCommit.FromString(package.data).transaction_id, 7)
        answer(
            network.last, package, TcpCommand.TransactionCommitCompleted,
            pb.TransactionCommitCompleted(
                transaction_id=7, result=pb.Success, first_event_number=0, last_event_number=0,
            ),
        )
        self.assertEqual(self.successResultOf(commit).next_expected_version, 0)

    def test_start_retried(self) -> None:
        """
        Starting is retried like any operation (a start that reached the
        node only leaves an empty transaction there); the transaction is
        bound to the connection that answered.
        """
        connection, clock, network = make(SETTINGS)
        connection.connect()
        network.last.identify()
        d = connection.start_transaction("tx", ExpectedVersion.ANY)
        self.assertEqual(len(of(network.last, TcpCommand.TransactionStart)), 1)
        self.reconnect(clock, network)
        (start,) = of(network.last, TcpCommand.TransactionStart)
        answer(
            network.last, start, TcpCommand.TransactionStartCompleted,
            pb.TransactionStartCompleted(transaction_id=3, result=pb.Success),
        )
        transaction = self.successResultOf(d)
        transaction.write([event()])
        self.assertEqual(len(of(network.last, TcpCommand.TransactionWrite)), 1)

    def test_continue_transaction_bound_to_current(self) -> None:
        connection, clock, network = make(SETTINGS)
        connection.connect()
        network.last.identify()
        transaction = connection.continue_transaction(5)
        first = transaction.write([event()])
        self.assertEqual(len(of(network.last, TcpCommand.TransactionWrite)), 1)
        self.reconnect(clock, network)
        self.failureResultOf(first, TransactionLost)
        self.failureResultOf(transaction.write([event()]), TransactionLost)
        self.assertEqual(of(network.last, TcpCommand.TransactionWrite), [])
