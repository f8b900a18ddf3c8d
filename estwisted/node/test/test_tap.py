# -*- test-case-name: estwisted.node.test.test_tap -*-
"""
Tests for L{estwisted.node.tap}: the C{twistd estore} options and service maker.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from typing import Any

from twisted.application.service import IService, Service
from twisted.plugin import IPlugin, getPlugins
from twisted.python import usage
from twisted.python.filepath import FilePath
from twisted.scripts.twistd import ServerOptions  # type: ignore[attr-defined]
from twisted.trial.unittest import SynchronousTestCase

import estwisted.node.service
from estwisted.node import tap
from estwisted.node.config import OPTIONS, Endpoint, NodeConfig, SourceKind


class OptionsTests(SynchronousTestCase):
    """
    L{tap.Options} parses argument lists into a L{NodeConfig}.
    """

    def parse(self, args: list[str], environ: dict[str, str] | None = None) -> NodeConfig:
        options = tap.Options(environ=environ or {}, stdout=io.StringIO())
        options.parseOptions(args)
        return options.config

    def test_noArguments(self) -> None:
        """
        No arguments and no environment give the default configuration.
        """
        self.assertEqual(self.parse([]), NodeConfig())

    def test_oneFlagPerOption(self) -> None:
        """
        usage.Options knows one long flag per table row.
        """
        options = tap.Options(environ={})
        self.assertEqual(sorted(o.rstrip("=") for o in options.longOpt if o.endswith("=")),
                         sorted(opt.flag for opt in OPTIONS))

    def test_flags(self) -> None:
        """
        Flags in every accepted spelling reach the configuration.
        """
        config = self.parse(["--IntIp", "127.0.0.2", "--ext-ip=127.0.0.3", "--mem-db",
                             "-ClusterSize", "3", "--gossip-seed", "127.0.0.1:2",
                             "--gossip-seed", "127.0.0.1:3", "--discover-via-dns", "false"])
        self.assertEqual(
            (config.int_ip, config.ext_ip, config.mem_db, config.cluster_size,
             config.discover_via_dns, config.gossip_seed),
            ("127.0.0.2", "127.0.0.3", True, 3, False,
             (Endpoint("127.0.0.1", 2), Endpoint("127.0.0.1", 3))),
        )
        self.assertEqual(config.source_of("IntIp").kind, SourceKind.COMMAND_LINE)

    def test_environment(self) -> None:
        """
        The injected environment is read and loses to flags.
        """
        config = self.parse(["--ext-tcp-port", "1500"],
                            {"EVENTSTORE_EXT_TCP_PORT": "1400", "EVENTSTORE_INT_TCP_PORT": "1401"})
        self.assertEqual((config.ext_tcp_port, config.int_tcp_port), (1500, 1401))

    def test_defaultEnvironmentIsProcess(self) -> None:
        """
        Without an injected mapping the process environment is used.
        """
        self.patch(os, "environ", {"EVENTSTORE_NODE_PRIORITY": "4"})
        options = tap.Options()
        options.parseOptions([])
        self.assertEqual(options.config.node_priority, 4)

    def test_configFile(self) -> None:
        """
        --config reads the YAML file.
        """
        path = FilePath(self.mktemp())
        path.setContent(b"ExtHttpPort: 2999\n")
        config = self.parse(["--config", path.path])
        self.assertEqual(config.ext_http_port, 2999)

    def test_errorsAreUsageErrors(self) -> None:
        """
        Configuration errors become one-line usage errors naming option and
        source.
        """
        cases = [
            (["--int-ipp", "127.0.0.1"],
             "unknown option --int-ipp on the command line (did you mean --int-ip?)"),
            (["--ext-tcp-port", "x"],
             "ExtTcpPort (command line --ext-tcp-port): expected an integer, got 'x'"),
            (["--int-ip"], "IntIp (command line --int-ip): missing value"),
            (["--read-only-replica"],
             "ReadOnlyReplica (command line --read-only-replica): a read-only replica needs "
             "ClusterSize > 1 (ClusterSize is 1 from default)"),
        ]
        for args, message in cases:
            e = self.assertRaises(usage.UsageError, self.parse, args)
            self.assertEqual(str(e), message)

    def test_environmentError(self) -> None:
        """
        A bad environment value names the variable.
        """
        e = self.assertRaises(usage.UsageError, self.parse, [], {"EVENTSTORE_INT_IP": "nope"})
        self.assertEqual(str(e), "IntIp (environment EVENTSTORE_INT_IP): 'nope' is not an IP "
                                 "address")

    def test_whatIf(self) -> None:
        """
        --what-if prints every value with its source and exits 0.
        """
        out = io.StringIO()
        options = tap.Options(environ={"EVENTSTORE_MEM_DB": "true"}, stdout=out)
        e = self.assertRaises(SystemExit, options.parseOptions, ["--what-if", "--int-ip",
                                                                 "127.0.0.6"])
        self.assertEqual(e.code, 0)
        text = out.getvalue()
        self.assertTrue(text.startswith("MODIFIED OPTIONS:"))
        self.assertIn("127.0.0.6 (command line --int-ip)", text)
        self.assertIn("true (environment EVENTSTORE_MEM_DB)", text)
        self.assertIn("DEFAULT OPTIONS:", text)
        for opt in OPTIONS:
            self.assertIn(opt.title + ":", text)

    def test_whatIfV5Spelling(self) -> None:
        """
        -WhatIf (v5 spelling) and EVENTSTORE_WHAT_IF work too.
        """
        for args, environ in ((["-WhatIf"], {}), ([], {"EVENTSTORE_WHAT_IF": "1"})):
            out = io.StringIO()
            options = tap.Options(environ=environ, stdout=out)
            e = self.assertRaises(SystemExit, options.parseOptions, args)
            self.assertEqual(e.code, 0)
            self.assertIn("WHAT IF:", out.getvalue())

    def test_whatIfInvalid(self) -> None:
        """
        --what-if with a bad value reports the error instead of printing.
        """
        out = io.StringIO()
        options = tap.Options(environ={}, stdout=out)
        self.assertRaises(usage.UsageError, options.parseOptions,
                          ["--what-if", "--int-tcp-port", "0"])
        self.assertEqual(out.getvalue(), "")

    def test_help(self) -> None:
        """
        --help lists every flag with its YAML key and variable, and exits.
        """
        options = tap.Options(environ={})
        text = str(options)
        for opt in OPTIONS:
            self.assertIn(f"--{opt.flag}=", text)
        self.assertIn("EVENTSTORE_GOSSIP_INTERVAL_MS", text)
        self.patch(sys, "stdout", io.StringIO())
        e = self.assertRaises(SystemExit, options.parseOptions, ["--help"])
        self.assertEqual(e.code, 0)


    def test_shortUsageAfterError(self) -> None:
        """
        After a usage error the usage text (which twistd prints before the
        error line) is one line, not the whole option list.
        """
        options = tap.Options(environ={})
        self.assertRaises(usage.UsageError, options.parseOptions, ["--nope"])
        self.assertEqual(options.getUsage(), "estore: see 'twistd estore --help' for every "
                                             "option.\n")


class TwistdTests(SynchronousTestCase):
    """
    The plugin as twistd sees it.
    """

    def test_pluginFound(self) -> None:
        """
        The estore service maker is a plugin whose options are L{tap.Options}.
        """
        from twisted.application.service import IServiceMaker

        makers = [p for p in getPlugins(IPlugin) if IServiceMaker.providedBy(p)
                  and p.tapname == "estore"]
        self.assertEqual(len(makers), 1)
        self.assertIs(makers[0].options, tap.Options)

    def test_twistdOptionsStayTwistds(self) -> None:
        """
        twistd's own options before C{estore} are twistd's; the plugin gets
        only what follows.
        """
        self.patch(os, "environ", {})
        config = ServerOptions()
        config.parseOptions(["-n", "--pidfile=", "--logfile=-", "estore", "--int-ip",
                             "127.0.0.8", "--mem-db"])
        self.assertTrue(config["nodaemon"])
        self.assertEqual(config["logfile"], "-")
        self.assertEqual(config.subCommand, "estore")
        self.assertEqual(config.subOptions.config.int_ip, "127.0.0.8")
        self.assertTrue(config.subOptions.config.mem_db)

    def test_twistdWhatIf(self) -> None:
        """
        C{twistd -n estore --what-if} prints and exits 0 while parsing, before
        anything could start.
        """
        self.patch(os, "environ", {})
        out = io.StringIO()
        self.patch(sys, "stdout", out)
        e = self.assertRaises(SystemExit, ServerOptions().parseOptions,
                              ["-n", "estore", "--what-if"])
        self.assertEqual(e.code, 0)
        self.assertIn("MODIFIED OPTIONS:", out.getvalue())

    def test_twistdBadFlag(self) -> None:
        """
        A bad flag after C{estore} is a usage error with the clear line.
        """
        self.patch(os, "environ", {})
        e = self.assertRaises(usage.UsageError, ServerOptions().parseOptions,
                              ["-n", "estore", "--ext-tcp-port", "99999"])
        self.assertEqual(
            str(e), "ExtTcpPort (command line --ext-tcp-port): port 99999 is out of range 1-65535"
        )


    def test_realProcess(self) -> None:
        """
        A real C{twistd -n estore}: --what-if exits 0 after printing; a bad
        file exits non-zero with the error as the last line, and nothing
        starts (no data directory is made).
        """
        here = FilePath(self.mktemp())
        here.makedirs()
        bad = here.child("bad.yaml")
        bad.setContent(b"IntIp: 127.0.0.1\nExtTcpPort: 70000\n")
        command = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
                   "-n", "--pidfile=", "estore"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTSTORE_")}
        ok = subprocess.run(command + ["--what-if"], cwd=here.path, env=env,
                            capture_output=True, text=True, timeout=60)
        self.assertEqual(ok.returncode, 0, ok.stderr)
        self.assertIn("WHAT IF:", ok.stdout)
        failed = subprocess.run(command + ["--config", bad.path], cwd=here.path, env=env,
                                capture_output=True, text=True, timeout=60)
        self.assertNotEqual(failed.returncode, 0)
        last = failed.stdout.strip().splitlines()[-1]
        self.assertTrue(last.endswith(
            f"ExtTcpPort (file {bad.path}, line 2): port 70000 is out of range 1-65535"), last)
        self.assertLess(len(failed.stdout.splitlines()), 10)
        self.assertFalse(here.child("estore-data").exists())


class MakeServiceTests(SynchronousTestCase):
    """
    L{tap.makeService} hands the configuration to the service module.
    """

    def test_callsMakeNodeService(self) -> None:
        """
        makeService calls C{estwisted.node.service.make_node_service} with the
        parsed configuration and the global reactor, and returns its result.
        """
        from twisted.internet import reactor

        calls: list[tuple[Any, Any]] = []
        built = Service()

        def fake(config: Any, given_reactor: Any) -> IService:
            calls.append((config, given_reactor))
            return built

        self.patch(estwisted.node.service, "make_node_service", fake)
        options = tap.Options(environ={})
        options.parseOptions(["--mem-db"])
        self.assertIs(tap.makeService(options), built)
        self.assertEqual(calls, [(options.config, reactor)])
        self.assertTrue(calls[0][0].mem_db)

    def test_startupErrorExits(self) -> None:
        """
        A L{StartupError} while building the node (it opens the database)
        becomes C{SystemExit} with one line, before anything listens.
        """
        from estwisted.node.service import StartupError

        def broken(config: Any, given_reactor: Any) -> IService:
            raise StartupError("cannot open the database in x: locked")

        self.patch(estwisted.node.service, "make_node_service", broken)
        options = tap.Options(environ={})
        options.parseOptions(["--mem-db"])
        e = self.assertRaises(SystemExit, tap.makeService, options)
        self.assertEqual(str(e), "estore: cannot open the database in x: locked")

    def test_buildsRealService(self) -> None:
        """
        With the real service module, makeService returns an IService
        (not started).
        """
        options = tap.Options(environ={})
        options.parseOptions(["--mem-db"])
        service = tap.makeService(options)
        self.assertTrue(IService.providedBy(service))
        self.assertFalse(service.running)
