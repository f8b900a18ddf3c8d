"""
The generated modules under L{estwisted.grpc.protos} match what the pinned
grpcio-tools makes of the C{.proto} files, and the wire names are those
clients call.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import tempfile

from twisted.trial.unittest import SkipTest, SynchronousTestCase

import estwisted
from estwisted.grpc.protos import gossip_pb2, serverfeatures_pb2, streams_pb2

ROOT = os.path.dirname(os.path.dirname(estwisted.__file__))
PROTOS = os.path.join(ROOT, "estwisted", "grpc", "protos")


class GeneratedTests(SynchronousTestCase):
    """
    The committed C{_pb2} modules are the regeneration's output.
    """

    def test_matchesRegeneration(self) -> None:
        """
        Running protoc again produces byte-identical modules and stubs.
        """
        try:
            import grpc_tools  # noqa: F401
        except ImportError:
            raise SkipTest("grpcio-tools (the dev extra) is not installed") from None
        out = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, out)
        protos = sorted(glob.glob(os.path.join(PROTOS, "*.proto")))
        relative = [os.path.relpath(p, ROOT) for p in protos]
        subprocess.run(
            [sys.executable, "-m", "grpc_tools.protoc", "-I", ".", f"--python_out={out}",
             f"--pyi_out={out}", *relative],
            cwd=ROOT, check=True, capture_output=True, timeout=120,
        )
        for path in relative:
            for suffix in ("_pb2.py", "_pb2.pyi"):
                generated = os.path.join(out, path[: -len(".proto")] + suffix)
                committed = os.path.join(ROOT, path[: -len(".proto")] + suffix)
                with open(generated, "rb") as g, open(committed, "rb") as c:
                    self.assertEqual(g.read(), c.read(), f"{committed} is stale: run generate.sh")

    def test_serviceNames(self) -> None:
        """
        The services carry EventStoreDB's package and service names.
        """
        self.assertEqual(
            streams_pb2.DESCRIPTOR.services_by_name["Streams"].full_name,
            "event_store.client.streams.Streams",
        )
        self.assertEqual(
            gossip_pb2.DESCRIPTOR.services_by_name["Gossip"].full_name,
            "event_store.client.gossip.Gossip",
        )
        self.assertEqual(
            serverfeatures_pb2.DESCRIPTOR.services_by_name["ServerFeatures"].full_name,
            "event_store.client.server_features.ServerFeatures",
        )

    def test_fieldNumbers(self) -> None:
        """
        A sample of field numbers clients depend on.
        """
        options = streams_pb2.ReadReq.Options.DESCRIPTOR.fields_by_name
        self.assertEqual(
            [options[n].number for n in ("stream", "all", "read_direction", "resolve_links",
                                         "count", "subscription", "filter", "no_filter",
                                         "uuid_option")],
            list(range(1, 10)),
        )
        content = streams_pb2.ReadResp.DESCRIPTOR.fields_by_name
        self.assertEqual(content["checkpoint"].number, 3)
        self.assertEqual(content["caught_up"].number, 8)
        batch = streams_pb2.BatchAppendResp.DESCRIPTOR.fields_by_name
        self.assertEqual((batch["error"].number, batch["success"].number), (2, 3))
