# -*- test-case-name: estwisted.grpc.test.test_persistent_settings -*-
"""
Tests for L{estwisted.grpc.persistent.settings_of}: where a persistent
subscription starts, in each form a client sends it (issue 15: the end).
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from estwisted.grpc.persistent import settings_of
from estwisted.grpc.protos import persistent_pb2

END = (1 << 64) - 1


def _options(**stream: object) -> persistent_pb2.CreateReq.Options:
    options = persistent_pb2.CreateReq.Options()
    options.group_name = "g"
    options.settings.message_timeout_ms = 1000
    if stream:
        options.stream.stream_identifier.stream_name = b"s"
        for name, value in stream.items():
            if value is None:
                getattr(options.stream, name).SetInParent()
            else:
                setattr(options.stream, name, value)
    else:
        options.stream_identifier.stream_name = b"s"
    return options


class StartFromTests(SynchronousTestCase):
    def test_stream_option_end(self) -> None:
        self.assertEqual(settings_of(_options(end=None), True).start_from, -1)

    def test_stream_option_start(self) -> None:
        self.assertEqual(settings_of(_options(start=None), True).start_from, 0)

    def test_settings_revision_end(self) -> None:
        """
        A 20.10-style request (no stream option): the end is
        UInt64.MaxValue in the deprecated settings revision, as
        @eventstore/db-client sends it.
        """
        options = _options()
        options.settings.revision = END
        self.assertEqual(settings_of(options, True).start_from, -1)

    @given(st.integers(0, (1 << 63) - 1))
    def test_revision(self, revision: int) -> None:
        self.assertEqual(settings_of(_options(revision=revision), True).start_from, revision)
        options = _options()
        options.settings.revision = revision
        self.assertEqual(settings_of(options, True).start_from, revision)
