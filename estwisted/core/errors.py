# -*- test-case-name: estwisted.core.test.test_streams -*-
"""
The exception hierarchy.  Expected errors become error replies on the wire
(TCP result codes, HTTP statuses); anything else is a bug and is logged.
"""

from __future__ import annotations


class EstoreError(Exception):
    """
    Base of every estwisted error.
    """


class ConfigError(EstoreError):
    """
    A configuration value is wrong.  The message names the option and its
    source.
    """


class StorageError(EstoreError):
    """
    The log could not be written or read (full disk, I/O error).  Nothing
    from the failed batch was acknowledged.
    """


class DiskFull(StorageError):
    """
    The disk is full: the batch was not written and the log is unchanged.
    """


class CorruptRecord(StorageError):
    """
    Bytes in the log failed their checksum or framing.
    """


class OperationError(EstoreError):
    """
    An operation was refused for a reason the client is told about.
    """


class WrongExpectedVersion(OperationError):
    """
    The stream's version is not what the writer expected.

    @ivar current_version: the stream's current last event number.
    """

    def __init__(self, stream: str, current_version: int, message: str = "") -> None:
        super().__init__(message or f"Wrong expected version for stream {stream!r}")
        self.stream = stream
        self.current_version = current_version


class StreamDeleted(OperationError):
    """
    The stream is hard-deleted (or soft-deleted where that matters).
    """


class AccessDenied(OperationError):
    """
    The principal lacks the right for the operation.
    """


class NotAuthenticated(OperationError):
    """
    Credentials were given and are wrong.
    """


class InvalidTransaction(OperationError):
    """
    Unknown or finished transaction id.
    """


class BadRequest(OperationError):
    """
    The request is malformed (bad stream name, empty event id, oversize event,
    bad read size ...).
    """


class NotFound(OperationError):
    """
    The thing asked for (user, subscription group ...) does not exist.
    """


class AlreadyExists(OperationError):
    """
    The thing asked to create exists already.
    """


class CommitTimeout(OperationError):
    """
    The write was not confirmed in time; the client may retry with the same
    event ids.
    """


class NotReady(OperationError):
    """
    The node cannot serve the request yet (starting, shutting down).
    """


class NotLeader(NotReady):
    """
    A cluster node that is not the leader was asked to write (or to serve a
    read that requires the master).  Edges answer C{NotHandled(NotMaster)}
    with the leader's external endpoints, or forward the request.

    @ivar tcp: the leader's external TCP C{(host, port)}, C{None} if unknown.
    @ivar http: the leader's external HTTP C{(host, port)}, C{None} if
        unknown.
    """

    def __init__(
        self,
        message: str = "Not the leader",
        tcp: tuple[str, int] | None = None,
        http: tuple[str, int] | None = None,
    ) -> None:
        super().__init__(message)
        self.tcp = tcp
        self.http = http
