# -*- test-case-name: estwisted.manager.test.test_tap -*-
"""
Tests for L{estwisted.manager.tap} and L{estwisted.manager.config}: the
C{twistd estore-manager} options.
"""

from __future__ import annotations

import io
import os

from twisted.plugin import IPlugin, getPlugins
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from estwisted.manager import tap
from estwisted.manager.config import MANAGER_OPTIONS, ManagerConfig
from estwisted.node.config import Endpoint, SourceKind


class OptionsTests(SynchronousTestCase):
    """
    L{tap.Options} parses argument lists into a L{ManagerConfig}.
    """

    def setUp(self) -> None:
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)
        self.database = self.write("database.yaml", "MemDb: true\nClusterSize: 1\n")
        self.watchdog = self.write("watchdog.esconfig", f"# --config {self.database}\n")

    def write(self, name: str, text: str) -> str:
        path = os.path.join(self.dir, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def parse(self, args: list[str], environ: dict[str, str] | None = None) -> tap.Options:
        options = tap.Options(environ=environ or {}, stdout=io.StringIO())
        options.parseOptions(args)
        return options

    def manager_yaml(self, extra: str = "") -> str:
        return self.write(
            "manager.yaml",
            "IntIp: 127.0.0.1\nExtIp: 127.0.0.1\nIntHttpPort: 30777\nExtHttpPort: 30778\n"
            "DiscoverViaDns: true\nClusterDns: cluster1.eventstore.local\n"
            "ClusterGossipPort: 30777\nEnableWatchdog: true\n"
            f"WatchdogConfig: {self.watchdog}\nLog: {self.dir}/manager-log\n" + extra,
        )

    def test_guideExample(self) -> None:
        """
        The guide's manager.yaml is accepted; the watchdog file is read.
        """
        options = self.parse(["--config", self.manager_yaml()])
        config = options.config
        self.assertEqual(
            (config.int_http_port, config.ext_http_port, config.cluster_dns,
             config.cluster_gossip_port, config.enable_watchdog),
            (30777, 30778, "cluster1.eventstore.local", 30777, True),
        )
        self.assertEqual([n.arguments for n in options.nodes],
                         [("--config", self.database)])
        self.assertEqual(config.source_of("ClusterDns").kind, SourceKind.FILE)

    def test_defaults(self) -> None:
        """
        Without a watchdog the defaults are v5's manager ports.
        """
        config = self.parse(["--enable-watchdog", "false"]).config
        self.assertEqual(config, ManagerConfig(enable_watchdog=False))
        self.assertEqual((config.int_http_port, config.ext_http_port), (30777, 30778))

    def test_precedence(self) -> None:
        """
        Default < file < environment < command line.
        """
        path = self.manager_yaml("GossipSeed: ['127.0.0.2:30777']\n")
        config = self.parse(
            ["--config", path, "-ExtHttpPort", "4000"],
            {"EVENTSTORE_EXT_HTTP_PORT": "3000", "EVENTSTORE_INT_HTTP_PORT": "3001"},
        ).config
        self.assertEqual((config.ext_http_port, config.int_http_port), (4000, 3001))
        self.assertEqual(config.gossip_seed, (Endpoint("127.0.0.2", 30777),))
        self.assertEqual(config.source_of("IntHttpPort").kind, SourceKind.ENVIRONMENT)

    def test_gossipPortAlias(self) -> None:
        """
        C{GossipPort} and C{ManagerPort} are aliases of C{ClusterGossipPort}.
        """
        for key in ("GossipPort", "ManagerPort"):
            path = self.write("m.yaml", f"{key}: 31000\nEnableWatchdog: false\n")
            self.assertEqual(self.parse(["--config", path]).config.cluster_gossip_port, 31000)

    def test_unknownKeyRefused(self) -> None:
        """
        An unknown YAML key is refused with one line naming it, its file
        and line.
        """
        path = self.manager_yaml("WatchdogConfg: x\n")
        e = self.assertRaises(usage.UsageError, self.parse, ["--config", path])
        self.assertIn("WatchdogConfg (file", str(e))
        self.assertIn("line 11", str(e))
        self.assertIn("did you mean WatchdogConfig", str(e))

    def test_badValueRefused(self) -> None:
        """
        A bad value is refused naming the option and source.
        """
        e = self.assertRaises(usage.UsageError, self.parse,
                              ["--enable-watchdog-"], {"EVENTSTORE_INT_HTTP_PORT": "x"})
        self.assertIn("IntHttpPort (environment EVENTSTORE_INT_HTTP_PORT)", str(e))

    def test_unknownFlagRefused(self) -> None:
        e = self.assertRaises(usage.UsageError, self.parse, ["--watchdog-cfg", "x"])
        self.assertIn("unknown option --watchdog-cfg", str(e))

    def test_watchdogNeedsFile(self) -> None:
        """
        The watchdog (on by default) needs WatchdogConfig.
        """
        e = self.assertRaises(usage.UsageError, self.parse, [])
        self.assertIn("WatchdogConfig", str(e))

    def test_missingWatchdogFile(self) -> None:
        """
        A missing watchdog file refuses the start with one line.
        """
        e = self.assertRaises(usage.UsageError, self.parse,
                              ["--watchdog-config", "/nonexistent/w"])
        self.assertIn("/nonexistent/w", str(e))

    def test_badWatchdogLine(self) -> None:
        """
        A wrong line of the watchdog file is refused with its number.
        """
        path = self.write("w2", f"\n# --config {self.database}\n--config x\n")
        e = self.assertRaises(usage.UsageError, self.parse, ["--watchdog-config", path])
        self.assertIn(f"watchdog file {path}, line 3", str(e))

    def test_badNodeOption(self) -> None:
        """
        A node option the node would refuse is refused at the manager's
        start, naming the watchdog line and the node's option.
        """
        path = self.write("w3", "# --int-tcp-prt 5\n")
        e = self.assertRaises(usage.UsageError, self.parse, ["--watchdog-config", path])
        self.assertIn("line 1", str(e))
        self.assertIn("--int-tcp-prt", str(e))
        bad_yaml = self.write("bad.yaml", "ClusterSise: 3\n")
        path = self.write("w4", f"# --config {bad_yaml}\n")
        e = self.assertRaises(usage.UsageError, self.parse, ["--watchdog-config", path])
        self.assertIn("ClusterSise", str(e))

    def test_whatIf(self) -> None:
        """
        C{--what-if} prints every option with its source and the nodes, and
        exits 0.
        """
        options = tap.Options(environ={}, stdout=io.StringIO())
        e = self.assertRaises(SystemExit, options.parseOptions,
                              ["--config", self.manager_yaml(), "--what-if"])
        self.assertEqual(e.code, 0)
        out = options._stdout.getvalue()  # type: ignore[union-attr]
        self.assertIn("CLUSTER DNS:", out)
        self.assertIn("cluster1.eventstore.local (file ", out)
        self.assertIn("WATCHDOG FAILURE COUNT:", out)
        self.assertIn(f"node-1 (line 1): --config {self.database}", out)

    def test_oneFlagPerOption(self) -> None:
        options = tap.Options(environ={})
        self.assertEqual(sorted(o.rstrip("=") for o in options.longOpt if o.endswith("=")),
                         sorted(opt.flag for opt in MANAGER_OPTIONS))


class PluginTests(SynchronousTestCase):
    """
    The C{estore-manager} plugin is found by twistd.
    """

    def test_plugin(self) -> None:
        from twisted.plugins import estore_manager  # noqa: F401

        names = [p.tapname for p in getPlugins(IPlugin) if hasattr(p, "tapname")]
        self.assertIn("estore-manager", names)
        self.assertIn("estore", names)
