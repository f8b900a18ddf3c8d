# -*- test-case-name: estwisted.client.test.test_pure -*-
"""
The client's exception hierarchy.  Every failure an operation's Deferred
can fire with is an L{EventStoreClientError}.
"""

from __future__ import annotations

from typing import Optional


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
