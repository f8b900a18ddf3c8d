# -*- test-case-name: estwisted.client.test.test_pure -*-
"""
The client's exception hierarchy.  Every failure an operation's Deferred
can fire with is an L{EventStoreClientError}.
"""

from __future__ import annotations

from typing import Any, Optional


class EventStoreClientError(Exception):
    """
    Base of every error of the client.
    """


class ConnectionClosed(EventStoreClientError):
    """
    The connection was closed (by C{close()}, or because it gave up
    reconnecting) before the operation completed.
    """


class CannotEstablishConnection(EventStoreClientError):
    """
    No node could be found or reached within the configured attempts.
    """


class OperationTimedOut(EventStoreClientError):
    """
    The operation was not answered within C{operation_timeout} on its last
    allowed attempt.
    """


class RetriesLimitReached(EventStoreClientError):
    """
    The operation was retried C{max_retries} times without an answer.

    @ivar attempts: how many times it was sent.
    """

    def __init__(self, message: str, attempts: int) -> None:
        super().__init__(message)
        self.attempts = attempts


class QueueFull(EventStoreClientError):
    """
    More than C{max_queue_size} operations are waiting.
    """


class ServerError(EventStoreClientError):
    """
    The server answered with an error (C{BadRequest}, an C{Error} read
    result, an unexpected command).
    """


class NotAuthenticated(EventStoreClientError):
    """
    The server refused the credentials.
    """


class AccessDenied(EventStoreClientError):
    """
    The user may not do this on this stream.
    """


class WrongExpectedVersion(EventStoreClientError):
    """
    The stream is not at the expected version.

    @ivar current_version: the stream's version as the server reports it
        (C{None} when it does not say).
    """

    def __init__(self, message: str, current_version: Optional[int] = None) -> None:
        super().__init__(message)
        self.current_version = current_version


class StreamDeleted(EventStoreClientError):
    """
    The stream was (hard) deleted.
    """


class InvalidTransaction(EventStoreClientError):
    """
    The transaction is not valid (unknown id, or already committed).
    """


class TransactionLost(InvalidTransaction):
    """
    The transaction lives on a connection (a node's memory) that is gone:
    the connection was lost or moved to another node (a failover) before
    this write or commit could be answered, or a write's outcome is unknown.
    Nothing of the transaction was committed, and the client will not
    commit it: start a new one (with the same C{EventData}, so that events
    that reached the stream some other way are not written twice).

    @ivar transaction_id: the lost transaction's id.
    """

    def __init__(self, message: str, transaction_id: int) -> None:
        super().__init__(message)
        self.transaction_id = transaction_id


class TransactionCommitUnknown(InvalidTransaction):
    """
    The commit was sent but its answer never came (the connection was lost
    or the attempt timed out): the transaction may or may not be committed
    (atomically: all of its events or none).  The client does not send the
    commit again (the id may mean another transaction on another node).
    Appending the same C{events} with the transaction's
    C{expected_version} settles it: the node answers a repeat with the
    original result, or writes them once.

    @ivar transaction_id: the transaction's id.
    @ivar stream: its stream (C{None} for L{continue_transaction}).
    @ivar expected_version: as given to C{start_transaction} (C{None} for
        L{continue_transaction}).
    @ivar events: every event written through this transaction object.
    """

    def __init__(
        self,
        message: str,
        transaction_id: int,
        stream: Optional[str],
        expected_version: Optional[int],
        events: tuple[Any, ...],
    ) -> None:
        super().__init__(message)
        self.transaction_id = transaction_id
        self.stream = stream
        self.expected_version = expected_version
        self.events = events


class PersistentSubscriptionError(EventStoreClientError):
    """
    A persistent subscription group operation failed (C{AlreadyExists},
    C{DoesNotExist}, C{Fail}).

    @ivar result: the server's result name.
    """

    def __init__(self, message: str, result: str) -> None:
        super().__init__(message)
        self.result = result


class SubscriptionDropped(EventStoreClientError):
    """
    The server dropped a subscription (access denied, not found, group
    deleted, too many subscribers) or the client gave up on it.

    @ivar reason: the drop reason name.
    """

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason
