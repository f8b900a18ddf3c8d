"""
Tests for L{estwisted.node.jsonlog}.
"""

from __future__ import annotations

import io
import json

from twisted.logger import Logger, LogLevel
from twisted.trial.unittest import SynchronousTestCase

from estwisted.node.jsonlog import event_as_json, json_observer


class JsonLogTests(SynchronousTestCase):
    def test_fields(self) -> None:
        """
        A line holds the time, level, namespace, formatted message and the
        event's own fields; bookkeeping keys are left out.
        """
        out = io.StringIO()
        log = Logger(namespace="estwisted.test", observer=json_observer(out))
        log.info("Wrote {count} events to {stream}", count=3, stream="orders", raw=b"\xff")
        record = json.loads(out.getvalue())
        self.assertEqual(record["message"], "Wrote 3 events to orders")
        self.assertEqual(record["level"], "info")
        self.assertEqual(record["namespace"], "estwisted.test")
        self.assertEqual(record["count"], 3)
        self.assertEqual(record["stream"], "orders")
        self.assertEqual(record["raw"], "\ufffd")
        self.assertTrue(record["time"].endswith("+00:00"))
        self.assertFalse([k for k in record if k.startswith("log_")])
        self.assertEqual(out.getvalue().count("\n"), 1)

    def test_failure(self) -> None:
        out = io.StringIO()
        log = Logger(namespace="x", observer=json_observer(out))
        try:
            raise ZeroDivisionError("division by zero")
        except ZeroDivisionError:
            log.failure("Oops {n}", n=1)
        record = json.loads(out.getvalue())
        self.assertEqual(record["level"], "critical")
        self.assertIn("ZeroDivisionError", record["failure"])
        self.assertEqual(record["message"].splitlines()[0], "Oops 1")

    def test_unserializable(self) -> None:
        line = event_as_json(
            {"log_format": "{thing}", "thing": object(), "log_level": LogLevel.warn,
             "log_time": 0.0}
        )
        record = json.loads(line)
        self.assertIn("object", record["thing"])
        self.assertEqual(record["time"], "1970-01-01T00:00:00.000+00:00")
        self.assertEqual(record["level"], "warn")
