# -*- test-case-name: estwisted.manager.test.test_examples -*-
"""
The example files in C{etc/manager/} (the guide's three machines mapped to
127.0.0.1-3) are valid.
"""

from __future__ import annotations

import os

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from estwisted.manager.config import load_manager_config
from estwisted.manager.watchdogfile import read_watchdog_file
from estwisted.node.config import load_config

ETC = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))),
    "etc",
    "manager",
)


class ExampleTests(SynchronousTestCase):
    """
    Every machine's manager.yaml, manager-seeds.yaml, database.yaml and
    watchdog.esconfig load.
    """

    def test_machines(self) -> None:
        if not os.path.isdir(ETC):
            raise SkipTest("etc/manager is not in this installation")
        for n in (1, 2, 3):
            directory = os.path.join(ETC, f"machine{n}")
            ip = f"127.0.0.{n}"
            dns = load_manager_config({"Config": os.path.join(directory, "manager.yaml")})
            self.assertEqual((dns.int_ip, dns.discover_via_dns, dns.cluster_dns,
                              dns.cluster_gossip_port), (ip, True, "cluster1.eventstore.local",
                                                         30777))
            seeds = load_manager_config({"Config": os.path.join(directory, "manager-seeds.yaml")})
            self.assertEqual(len(seeds.gossip_seed), 2)
            self.assertNotIn(ip, [s.host for s in seeds.gossip_seed])
            (spec,) = read_watchdog_file(os.path.join(directory, "watchdog.esconfig"))
            self.assertEqual(spec.arguments, ("--config", "/etc/estore/database.yaml"))
            node = load_config({"Config": os.path.join(directory, "database.yaml")})
            self.assertEqual(
                (node.int_ip, node.cluster_size, [str(s) for s in node.gossip_seed]),
                (ip, 3, [f"{ip}:30777"]),
            )
