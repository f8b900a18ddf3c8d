# -*- test-case-name: estwisted.storage.test.test_event_log -*-
"""
Seams with more than one implementation.
"""

from __future__ import annotations

from collections.abc import Sequence

from zope.interface import Attribute, Interface


class IEventLog(Interface):
    """
    The append-only transaction log.  Synchronous: no reactor, no Deferreds.

    Appends are buffered until L{flush}, which makes everything appended so far
    durable at once (one joined write and one C{fdatasync} for a file log).  The
    caller (the stream store) decides when to flush: that is group commit.

    Positions are logical byte offsets, strictly increasing, and the first
    client record is at a position greater than 0.
    """

    end_position = Attribute(
        "int: the durable end of the log (the writer checkpoint); reads never "
        "return a record at or past it"
    )
    pending_position = Attribute("int: where the next appended record will be; >= end_position")

    def append(
        stream: str,
        event_number: int,
        event_id: bytes,
        event_type: str,
        flags: int,
        data: bytes,
        metadata: bytes,
        created: int,
    ) -> int:
        """
        Buffer one record.

        @return: the position the record will have once flushed.
        """

    def append_many(
        stream: str,
        first: int,
        events: Sequence[estwisted.core.model.NewEvent],  # type: ignore[name-defined]  # noqa: F821
        created: int,
    ) -> tuple[list[int], list[int]]:
        """
        Buffer one record per event of C{events} (C{stream}, numbered from
        C{first}, flags from C{is_json}), as L{append} would one by one.

        @return: the records' positions and next positions.
        """

    def flush() -> int:
        """
        Make every buffered record durable.

        @return: the new L{end_position}.
        @raise estwisted.core.errors.StorageError: the records could not be written;
            the buffer is discarded and the log is as before the appends.
        """

    def discard() -> None:
        """
        Drop every buffered, unflushed record (not those of a flush in
        flight).
        """

    def begin_flush() -> Optional[estwisted.storage.flushing.FlushJob]:  # type: ignore[name-defined]  # noqa: F821
        """
        The first half of a flush whose blocking part may run in another
        thread (L{estwisted.storage.flushing}): take every buffered record
        into a L{estwisted.storage.flushing.FlushJob}; later appends form
        the next batch behind it.  At most one job is in flight.

        @return: the job, or C{None} when nothing is buffered.
        @raise estwisted.core.errors.StorageError: a job is in flight already, or
            the log failed.
        """

    def end_flush(job: estwisted.storage.flushing.FlushJob) -> int:  # type: ignore[name-defined]  # noqa: F821
        """
        The last half: after C{job.run()} returned, publish the new end; or,
        when it failed, undo it, drop what was buffered behind it and raise.

        @return: the new L{end_position}.
        @raise estwisted.core.errors.StorageError: the job failed.
        """

    def read(position: int) -> estwisted.core.model.EventRecord:  # type: ignore[name-defined]  # noqa: F821
        """
        Read the record at C{position}.

        @raise KeyError: no record starts there (or it is past the end).
        @raise estwisted.core.errors.CorruptRecord: the bytes are damaged.
        """

    def read_forward(position: int, max_count: int) -> list:  # type: ignore[type-arg]
        """
        Up to C{max_count} records with positions C{>= position}, ascending.
        System records (flag C{FLAG_SYSTEM}) are skipped.
        """

    def read_backward(position: int, max_count: int) -> list:  # type: ignore[type-arg]
        """
        Up to C{max_count} records with positions C{< position}, descending.
        System records are skipped.
        """

    def close() -> None:
        """
        Flush checkpoints and release files.
        """


class IReplicableLog(IEventLog):
    """
    An L{IEventLog} that quorum replication can copy
    (L{estwisted.replication}): records move between nodes as their framed
    bytes (L{estwisted.storage.records}), at identical positions.
    """

    def read_raw(position: int, max_bytes: int) -> tuple[int, bytes, int]:  # noqa: N805
        """
        Framed records of one chunk, from the first record at or after
        C{position} up to about C{max_bytes} (always at least one record
        when there is one), never at or past L{end_position}.

        @return: the position of the first returned record (the end when
            there is none), the frames, and the position after the last
            one (where the next read continues; in a L{MemoryLog} it is not
            the first position plus the frames' length).
        """

    def append_raw(position: int, frames: bytes) -> int:  # noqa: N805
        """
        Buffer framed records read from another node's L{read_raw}; the
        first must be at C{position} and each must land at the position it
        carries (a record that does not fit the chunk starts the next one,
        as L{IEventLog.append} does).  L{IEventLog.flush} makes them durable.

        @return: the new L{pending_position}.
        @raise estwisted.core.errors.CorruptRecord: a frame is damaged, or does
            not land at its own position; nothing is buffered then.
        """

    def truncate(position: int) -> None:  # noqa: N805
        """
        Drop every record at or past C{position} (a record boundary), on
        disk too, and discard the buffer.  The caller fixes the index.
        """


class ICommitGate(Interface):
    """
    What a clustered node's group commit waits for before it publishes a
    batch: the quorum (L{estwisted.replication.node.NodeReplication} provides
    it; a single node has none).
    """

    def commit(end: int) -> twisted.internet.defer.Deferred:  # type: ignore[name-defined]  # noqa: F821
        """
        The log was flushed up to C{end}: fire once a quorum holds every
        record before C{end}; fail (L{estwisted.core.errors.CommitTimeout},
        L{estwisted.core.errors.NotReady}) when that cannot be known.
        """
