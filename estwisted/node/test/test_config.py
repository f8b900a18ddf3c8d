# -*- test-case-name: estwisted.node.test.test_config -*-
"""
Tests for L{estwisted.node.config}: the option table, the four sources and their
precedence, validation messages, the seed documents' examples, what-if
output and the sample files under C{etc/}.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Optional

import attrs
from hypothesis import given
from hypothesis import strategies as st
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase

import estwisted
from estwisted.node.config import (
    OPTIONS,
    ConfigError,
    Endpoint,
    NodeConfig,
    Option,
    SourceKind,
    canonical_arguments,
    load_config,
    render_options,
    startup_warnings,
)
from estwisted.node.options import parse_endpoint

# --- fixtures from the seed documents (shared/seeds) ----------------------------

#: Command lines of the seed documents, with "EventStore.ClusterNode.exe"
#: removed (we run them as "twistd -n estore ...").
SEED_COMMAND_LINES = [
    r"--mem-db --log .\logs\log1 --int-ip 127.0.0.1 --ext-ip 127.0.0.1 --int-tcp-port=1111"
    r" --ext-tcp-port=1112 --int-http-port=1113 --ext-http-port=1114 --cluster-size=3"
    r" --discover-via-dns=false --gossip-seed=127.0.0.1:2113,127.0.0.1:3113",
    r"--mem-db --log .\logs\log2 --int-ip 127.0.0.1 --ext-ip 127.0.0.1 --int-tcp-port=2111"
    r" --ext-tcp-port=2112 --int-http-port=2113 --ext-http-port=2114 --cluster-size=3"
    r" --discover-via-dns=false --gossip-seed=127.0.0.1:1113,127.0.0.1:3113",
    r"--mem-db --log .\logs\log3 --int-ip 127.0.0.1 --ext-ip 127.0.0.1 --int-tcp-port=3111"
    r" --ext-tcp-port=3112 --int-http-port=3113 --ext-http-port=3114 --cluster-size=3"
    r" --discover-via-dns=false --gossip-seed=127.0.0.1:1113,127.0.0.1:2113",
    r"--mem-db --log c:\dbs\cluster\log1 --int-ip 192.168.0.1 --ext-ip 192.168.0.1"
    r" --int-tcp-port=1111 --ext-tcp-port=1112 --int-http-port=2113 --ext-http-port=2114"
    r" --cluster-size=3 --discover-via-dns=false --gossip-seed=192.168.0.2:2113,192.168.0.3:2113",
    r"--log c:\dbs\cluster\log1 --int-ip 192.168.0.1 --ext-ip 192.168.0.1"
    r" --int-tcp-port=1111 --ext-tcp-port=1112 --int-http-port=2113 --ext-http-port=2114"
    r" --cluster-size=3 --discover-via-dns=false --gossip-seed=192.168.0.2:2113,192.168.0.3:2113",
    r"--mem-db --log c:\dbs\cluster\log2 --int-ip 192.168.0.2 --ext-ip 192.168.0.2"
    r" --int-tcp-port=1111 --ext-tcp-port=1112 --int-http-port=2113 --ext-http-port=2114"
    r" --cluster-size=3 --discover-via-dns=false --gossip-seed=192.168.0.1:2113,192.168.0.3:2113",
    r"--mem-db --log c:\dbs\cluster\log3 --int-ip 192.168.0.3 --ext-ip 192.168.0.3"
    r" --int-tcp-port=1111 --ext-tcp-port=1112 --int-http-port=2113 --ext-http-port=2114"
    r" --cluster-size=3 --discover-via-dns=false --gossip-seed=192.168.0.1:2113,192.168.0.2:2113",
    r"--mem-db --log c:\dbs\cluster\log1 --int-ip 192.168.0.1 --ext-ip 192.168.0.1"
    r" --int-tcp-port=1111 --ext-tcp-port=1112 --int-http-port=2113 --ext-http-port=2114"
    r" --cluster-size=3 --cluster-dns mydomain.com --cluster-gossip-port=2113",
    r"--log c:\dbs\cluster\log1 --int-ip 192.168.0.1 --ext-ip 192.168.0.1"
    r" --int-tcp-port=1111 --ext-tcp-port=1112 --int-http-port=2113 --ext-http-port=2114"
    r" --cluster-size=3 --cluster-dns mydomain.com --cluster-gossip-port=2113",
    r"--mem-db --log c:\dbs\cluster\log2 --int-ip 192.168.0.2 --ext-ip 192.168.0.2"
    r" --int-tcp-port=1111 --ext-tcp-port=1112 --int-http-port=2113 --ext-http-port=2114"
    r" --cluster-size=3 --cluster-dns mydomain.com --cluster-gossip-port=2113",
    r"--mem-db --log c:\dbs\cluster\log3 --int-ip 192.168.0.3 --ext-ip 192.168.0.3"
    r" --int-tcp-port=1111 --ext-tcp-port=1112 --int-http-port=2113 --ext-http-port=2114"
    r" --cluster-size=3 --cluster-dns mydomain.com --cluster-gossip-port=2113",
]

#: "database.yaml" of the manager-node seed document.
SEED_DATABASE_YAML = r"""# Filename : database.yaml
---
Db: d:\es-data
IntIp: 192.168.1.11
ExtIp: 192.168.1.11
IntTcpPort: 1112
IntHttpPort: 2112
ExtTcpPort: 1113
ExtHttpPort: 2113
DiscoverViaDns: false
GossipSeed: ['192.168.1.11:30777']
ClusterSize: 3
"""

#: "manager.yaml" of the manager-node seed document.
SEED_MANAGER_YAML = r"""# Filename: manager.yaml
---
IntIp: 192.168.1.11
ExtIp: 192.168.1.11
IntHttpPort: 30777
ExtHttpPort: 30778
DiscoverViaDns: true
ClusterDns: cluster1.eventstore.local
ClusterGossipPort: 30777
EnableWatchdog: true
WatchdogConfig: c:\EventStore-Config\watchdog.esconfig
Log: d:\manager-log
"""

#: Options of the 21.x clustering seed document: (flag, YAML key,
#: environment variable, a value, the attribute and its expected value).
SEED_21_OPTIONS = [
    ("--cluster-size", "ClusterSize", "EVENTSTORE_CLUSTER_SIZE", "5", "cluster_size", 5),
    ("--cluster-dns", "ClusterDns", "EVENTSTORE_CLUSTER_DNS", "es.example.com",
     "cluster_dns", "es.example.com"),
    ("--discover-via-dns", "DiscoverViaDns", "EVENTSTORE_DISCOVER_VIA_DNS", "false",
     "discover_via_dns", False),
    ("--gossip-seed", "GossipSeed", "EVENTSTORE_GOSSIP_SEED", "10.0.0.2:2113,node3:2113",
     "gossip_seed", (Endpoint("10.0.0.2", 2113), Endpoint("node3", 2113))),
    ("--cluster-gossip-port", "ClusterGossipPort", "EVENTSTORE_CLUSTER_GOSSIP_PORT", "2113",
     "cluster_gossip_port", 2113),
    ("--gossip-interval-ms", "GossipIntervalMs", "EVENTSTORE_GOSSIP_INTERVAL_MS", "2000",
     "gossip_interval_ms", 2000),
    ("--gossip-allowed-difference-ms", "GossipAllowedDifferenceMs",
     "EVENTSTORE_GOSSIP_ALLOWED_DIFFERENCE_MS", "30000", "gossip_allowed_difference_ms", 30000),
    ("--gossip-timeout-ms", "GossipTimeoutMs", "EVENTSTORE_GOSSIP_TIMEOUT_MS", "2500",
     "gossip_timeout_ms", 2500),
    ("--gossip-on-single-node", "GossipOnSingleNode", "EVENTSTORE_GOSSIP_ON_SINGLE_NODE", "true",
     "gossip_on_single_node", True),
    ("--leader-election-timeout-ms", "LeaderElectionTimeoutMs",
     "EVENTSTORE_LEADER_ELECTION_TIMEOUT_MS", "1500", "leader_election_timeout_ms", 1500),
    ("--read-only-replica", "ReadOnlyReplica", "EVENTSTORE_READ_ONLY_REPLICA", "true",
     "read_only_replica", True),
    ("--node-priority", "NodePriority", "EVENTSTORE_NODE_PRIORITY", "3", "node_priority", 3),
    ("--commit-count", "CommitCount", "EVENTSTORE_COMMIT_COUNT", "2", "commit_count", 2),
    ("--prepare-count", "PrepareCount", "EVENTSTORE_PREPARE_COUNT", "2", "prepare_count", 2),
]

#: Every option the configuration brief names.
REQUIRED_OPTIONS = """
Db Index MemDb Log IntIp ExtIp IntTcpPort ExtTcpPort IntHttpPort ExtHttpPort
IntSecureTcpPort ExtSecureTcpPort IntIpAdvertiseAs ExtIpAdvertiseAs IntTcpPortAdvertiseAs
ExtTcpPortAdvertiseAs IntHttpPortAdvertiseAs ExtHttpPortAdvertiseAs ClusterSize
DiscoverViaDns ClusterDns ClusterGossipPort GossipSeed GossipIntervalMs GossipTimeoutMs
GossipAllowedDifferenceMs LeaderElectionTimeoutMs DeadMemberRemovalPeriodSec NodePriority
ReadOnlyReplica CommitCount PrepareCount PrepareTimeoutMs CommitTimeoutMs
IntTcpHeartbeatInterval IntTcpHeartbeatTimeout ExtTcpHeartbeatInterval ExtTcpHeartbeatTimeout
GossipOnExt AdminOnExt StatsOnExt CertificateFile CertificatePrivateKeyFile CertificatePassword
TrustedRootCertificatesPath CertificateReservedNodeCommonName Insecure ChunkSize MaxTruncation
RunProjections IntHttpPrefixes ExtHttpPrefixes ClusterDnsServer EnableWatchdog WatchdogConfig
WatchdogFailureTimeWindow WatchdogFailureCount WhatIf Config GossipOnSingleNode
""".split()


def _load(
    args: Sequence[str] = (),
    environ: Optional[Mapping[str, str]] = None,
) -> NodeConfig:
    """
    Load as the command line would: canonical arguments, then merge.
    """
    command_line = {}
    for arg in canonical_arguments(args):
        flag, _, value = arg[2:].partition("=")
        command_line[_by_flag(flag).name] = value
    return load_config(command_line=command_line, environ=environ or {})


def _by_flag(flag: str) -> Option:
    return next(opt for opt in OPTIONS if opt.flag == flag)


class _FileTestCase(SynchronousTestCase):
    """
    Writes configuration files for tests.
    """

    def write_yaml(self, text: str) -> str:
        path = FilePath(self.mktemp())
        path.setContent(text.encode("utf-8"))
        return str(path.path)


class TableTests(SynchronousTestCase):
    """
    The option table and the names derived from it.
    """

    def test_requiredOptions(self) -> None:
        """
        Every option the brief and the seed documents name is in the table.
        """
        names = {opt.name for opt in OPTIONS}
        self.assertEqual([n for n in REQUIRED_OPTIONS if n not in names], [])

    def test_namesUnique(self) -> None:
        """
        No option is described twice: names, flags and variables are unique.
        """
        for attribute in ("name", "flag", "env"):
            values = [getattr(opt, attribute) for opt in OPTIONS]
            self.assertEqual(len(values), len(set(values)), attribute)

    def test_everyFieldIsAnOption(self) -> None:
        """
        Every L{NodeConfig} field except the bookkeeping ones comes from the
        table, in the same order.
        """
        fields = [f.name for f in attrs.fields(NodeConfig)]
        self.assertEqual(fields, [opt.attribute for opt in OPTIONS] + [
            "sources", "ignored_environment"])

    def test_environmentNames(self) -> None:
        """
        The environment variable is EVENTSTORE_ plus the PascalCase name split
        at its word boundaries.
        """
        by_name = {opt.name: opt for opt in OPTIONS}
        self.assertEqual(by_name["IntIp"].env, "EVENTSTORE_INT_IP")
        self.assertEqual(by_name["GossipIntervalMs"].env, "EVENTSTORE_GOSSIP_INTERVAL_MS")
        self.assertEqual(
            by_name["DeadMemberRemovalPeriodSec"].env, "EVENTSTORE_DEAD_MEMBER_REMOVAL_PERIOD_SEC"
        )
        self.assertEqual(by_name["ExtIpAdvertiseAs"].env, "EVENTSTORE_EXT_IP_ADVERTISE_AS")
        self.assertEqual(by_name["Db"].env, "EVENTSTORE_DB")

    def test_flagNames(self) -> None:
        """
        The flag is the kebab-case name.
        """
        by_name = {opt.name: opt for opt in OPTIONS}
        self.assertEqual(by_name["IntIp"].flag, "int-ip")
        self.assertEqual(by_name["GossipAllowedDifferenceMs"].flag,
                         "gossip-allowed-difference-ms")
        self.assertEqual(by_name["WhatIf"].flag, "what-if")

    def test_defaultsValid(self) -> None:
        """
        With no sources the configuration is the built-in default: one node on
        loopback with the v5 ports and data under ./estore-data.
        """
        config = load_config()
        self.assertEqual(config, NodeConfig())
        self.assertEqual(
            (config.int_ip, config.ext_ip, config.int_tcp_port, config.ext_tcp_port,
             config.int_http_port, config.ext_http_port, config.cluster_size),
            ("127.0.0.1", "127.0.0.1", 1112, 1113, 2112, 2113, 1),
        )
        self.assertEqual(config.db, "./estore-data")
        self.assertEqual(config.index, os.path.join("./estore-data", "index"))
        self.assertEqual(config.cluster_gossip_port, 2112)
        self.assertEqual(config.chunk_size, 256 * 1024 * 1024)
        self.assertEqual(config.gossip_seed, ())
        self.assertEqual(config.source_of("IntIp").kind, SourceKind.DEFAULT)

    def test_specDefaults(self) -> None:
        """
        Defaults follow cluster.md section 7 (v5 values).
        """
        config = NodeConfig()
        self.assertEqual(
            (config.gossip_interval_ms, config.gossip_timeout_ms,
             config.gossip_allowed_difference_ms, config.leader_election_timeout_ms,
             config.dead_member_removal_period_sec, config.commit_count, config.prepare_count,
             config.prepare_timeout_ms, config.commit_timeout_ms),
            (1000, 500, 60000, 1000, 1800, -1, -1, 2000, 2000),
        )
        self.assertEqual(
            (config.int_tcp_heartbeat_interval, config.int_tcp_heartbeat_timeout,
             config.ext_tcp_heartbeat_interval, config.ext_tcp_heartbeat_timeout),
            (700, 700, 2000, 1000),
        )
        self.assertEqual((config.gossip_on_ext, config.admin_on_ext, config.stats_on_ext),
                         (True, True, True))
        self.assertEqual(config.cluster_dns, "fake.dns")
        self.assertEqual(config.certificate_reserved_node_common_name, "eventstoredb-node")
        self.assertFalse(config.insecure)

    def test_derivedDefaults(self) -> None:
        """
        Index follows Db and ClusterGossipPort follows IntHttpPort unless
        given.
        """
        config = _load(["--db", "/x/data", "--int-http-port", "3112"])
        self.assertEqual(config.index, os.path.join("/x/data", "index"))
        self.assertEqual(config.cluster_gossip_port, 3112)
        config = _load(["--db", "/x/data", "--index", "/y/idx", "--cluster-gossip-port", "9"])
        self.assertEqual((config.index, config.cluster_gossip_port), ("/y/idx", 9))

    def test_advertised(self) -> None:
        """
        The advertised address and ports default to the bound ones.
        """
        config = NodeConfig(int_ip="127.0.0.2", ext_http_port_advertise_as=80)
        self.assertEqual(config.advertised_int_ip, "127.0.0.2")
        self.assertEqual(config.advertised_ext_http_port, 80)
        self.assertEqual(config.advertised_ext_tcp_port, 1113)
        self.assertEqual(config.quorum, 1)
        self.assertEqual(NodeConfig(cluster_size=5).quorum, 3)


class EndpointTests(SynchronousTestCase):
    """
    C{host:port} values.
    """

    @given(
        host=st.one_of(
            st.ip_addresses().map(str),
            st.from_regex(r"\A[a-z][a-z0-9-]{0,10}[a-z0-9](\.[a-z]{2,5}){0,2}\Z"),
        ),
        number=st.integers(1, 65535),
    )
    def test_roundTrip(self, host: str, number: int) -> None:
        """
        An endpoint written with C{str} parses back to itself.
        """
        endpoint = Endpoint(host, number)
        self.assertEqual(parse_endpoint(str(endpoint)), endpoint)

    def test_malformed(self) -> None:
        """
        Missing, non-numeric and out-of-range ports and bad hosts are refused.
        """
        for text in ["127.0.0.1", "127.0.0.1:", ":2113", "127.0.0.1:x", "127.0.0.1:70000",
                     "127.0.0.1:0", "bad host:1", "[::1:2113", "[zz]:2113"]:
            self.assertRaises(ValueError, parse_endpoint, text)


class CommandLineTests(SynchronousTestCase):
    """
    L{canonical_arguments} accepts the v5 spellings.
    """

    def test_spellings(self) -> None:
        """
        --int-ip value, --int-ip=value, --IntIp value and -IntIp value all
        mean the same.
        """
        for args in (["--int-ip", "127.0.0.9"], ["--int-ip=127.0.0.9"],
                     ["--IntIp", "127.0.0.9"], ["-IntIp", "127.0.0.9"],
                     ["--INT-IP=127.0.0.9"]):
            self.assertEqual(canonical_arguments(args), ["--int-ip=127.0.0.9"], args)

    def test_booleans(self) -> None:
        """
        A boolean flag may be bare, followed by a true/false word, given with
        =, or suffixed with + or -.
        """
        self.assertEqual(canonical_arguments(["--mem-db"]), ["--mem-db=true"])
        self.assertEqual(canonical_arguments(["--mem-db", "false"]), ["--mem-db=false"])
        self.assertEqual(canonical_arguments(["--mem-db", "True", "--log", "x"]),
                         ["--mem-db=True", "--log=x"])
        self.assertEqual(canonical_arguments(["--mem-db", "--log", "x"]),
                         ["--mem-db=true", "--log=x"])
        self.assertEqual(canonical_arguments(["--mem-db=0"]), ["--mem-db=0"])
        self.assertEqual(canonical_arguments(["--mem-db-"]), ["--mem-db=false"])
        self.assertEqual(canonical_arguments(["--MemDb+"]), ["--mem-db=true"])
        self.assertEqual(canonical_arguments(["-WhatIf"]), ["--what-if=true"])

    def test_negativeNumber(self) -> None:
        """
        A negative number is a value, not a flag.
        """
        self.assertEqual(canonical_arguments(["--commit-count", "-1"]), ["--commit-count=-1"])

    def test_listsAccumulate(self) -> None:
        """
        A list option given twice keeps both values; others keep the last.
        """
        self.assertEqual(
            canonical_arguments(["--gossip-seed", "a:1", "--int-ip", "127.0.0.1",
                                 "--gossip-seed=b:2", "--int-ip", "127.0.0.2"]),
            ["--gossip-seed=a:1,b:2", "--int-ip=127.0.0.2"],
        )

    def test_helpPassesThrough(self) -> None:
        """
        --help and --version are left for usage.Options.
        """
        self.assertEqual(canonical_arguments(["--help"]), ["--help"])
        self.assertEqual(canonical_arguments(["--version"]), ["--version"])

    def test_unknownFlagSuggests(self) -> None:
        """
        An unknown flag names itself and the nearest known flag.
        """
        e = self.assertRaises(ConfigError, canonical_arguments, ["--int-ipp", "127.0.0.1"])
        self.assertEqual(
            str(e), "unknown option --int-ipp on the command line (did you mean --int-ip?)"
        )
        e = self.assertRaises(ConfigError, canonical_arguments, ["--gossip-seeds=a:1"])
        self.assertIn("--gossip-seeds", str(e))
        self.assertIn("did you mean --gossip-seed?", str(e))
        e = self.assertRaises(ConfigError, canonical_arguments, ["--zzzzzzzzzzzz"])
        self.assertNotIn("did you mean", str(e))

    def test_missingValue(self) -> None:
        """
        A value option at the end or before another flag has no value.
        """
        e = self.assertRaises(ConfigError, canonical_arguments, ["--int-ip"])
        self.assertEqual(str(e), "IntIp (command line --int-ip): missing value")
        e = self.assertRaises(ConfigError, canonical_arguments, ["--db", "--mem-db"])
        self.assertEqual(str(e), "Db (command line --db): missing value")

    def test_strayArgument(self) -> None:
        """
        A word that is not an option's value is refused.
        """
        e = self.assertRaises(ConfigError, canonical_arguments, ["--mem-db", "yes", "extra"])
        self.assertIn("unexpected argument 'extra'", str(e))

    @given(st.data())
    def test_anySpellingOfAnyOption(self, data: st.DataObject) -> None:
        """
        Any option, spelled in any letter case with or without dashes, maps
        to its canonical flag.
        """
        opt = data.draw(st.sampled_from(OPTIONS))
        words = opt.flag.split("-")
        spelled = ""
        for word in words:
            upper = data.draw(st.booleans())
            dash = data.draw(st.booleans())
            spelled += ("-" if dash and spelled else "") + (word.upper() if upper else word)
        prefix = data.draw(st.sampled_from(["-", "--"]))
        self.assertEqual(canonical_arguments([prefix + spelled + "=v"]), [f"--{opt.flag}=v"])


class PrecedenceTests(_FileTestCase):
    """
    defaults < file < environment < command line, for each pair.
    """

    def test_fileOverDefault(self) -> None:
        """
        A file value beats the default and records the file and line.
        """
        path = self.write_yaml("---\nExtTcpPort: 1200\n")
        config = _load(["--config", path])
        self.assertEqual(config.ext_tcp_port, 1200)
        source = config.source_of("ExtTcpPort")
        self.assertEqual(source.kind, SourceKind.FILE)
        self.assertEqual(str(source), f"file {path}, line 2")

    def test_environmentOverDefault(self) -> None:
        """
        An environment variable beats the default.
        """
        config = _load([], {"EVENTSTORE_EXT_TCP_PORT": "1201"})
        self.assertEqual(config.ext_tcp_port, 1201)
        self.assertEqual(str(config.source_of("ExtTcpPort")),
                         "environment EVENTSTORE_EXT_TCP_PORT")

    def test_commandLineOverDefault(self) -> None:
        """
        A flag beats the default.
        """
        config = _load(["--ext-tcp-port", "1202"])
        self.assertEqual(config.ext_tcp_port, 1202)
        self.assertEqual(str(config.source_of("ext_tcp_port")), "command line --ext-tcp-port")

    def test_environmentOverFile(self) -> None:
        """
        The environment beats the file.
        """
        path = self.write_yaml("ExtTcpPort: 1200\n")
        config = _load(["--config", path], {"EVENTSTORE_EXT_TCP_PORT": "1201"})
        self.assertEqual(config.ext_tcp_port, 1201)
        self.assertEqual(config.source_of("ExtTcpPort").kind, SourceKind.ENVIRONMENT)

    def test_commandLineOverFile(self) -> None:
        """
        The command line beats the file.
        """
        path = self.write_yaml("ExtTcpPort: 1200\n")
        config = _load(["--config", path, "--ext-tcp-port", "1202"])
        self.assertEqual(config.ext_tcp_port, 1202)
        self.assertEqual(config.source_of("ExtTcpPort").kind, SourceKind.COMMAND_LINE)

    def test_commandLineOverEnvironment(self) -> None:
        """
        The command line beats the environment.
        """
        config = _load(["--ext-tcp-port", "1202"], {"EVENTSTORE_EXT_TCP_PORT": "1201"})
        self.assertEqual(config.ext_tcp_port, 1202)
        self.assertEqual(config.source_of("ExtTcpPort").kind, SourceKind.COMMAND_LINE)

    def test_allFour(self) -> None:
        """
        Different options from all four sources mix, each keeping its source.
        """
        path = self.write_yaml("IntTcpPort: 1300\nExtTcpPort: 1301\n")
        config = _load(["--config", path, "--ext-tcp-port", "1302"],
                       {"EVENTSTORE_INT_TCP_PORT": "1303", "EVENTSTORE_MEM_DB": "true"})
        self.assertEqual(
            (config.int_tcp_port, config.ext_tcp_port, config.mem_db, config.int_http_port),
            (1303, 1302, True, 2112),
        )
        self.assertEqual(
            [config.source_of(n).kind for n in ("IntTcpPort", "ExtTcpPort", "MemDb",
                                                 "IntHttpPort", "Config")],
            [SourceKind.ENVIRONMENT, SourceKind.COMMAND_LINE, SourceKind.ENVIRONMENT,
             SourceKind.DEFAULT, SourceKind.COMMAND_LINE],
        )

    def test_configFromEnvironment(self) -> None:
        """
        EVENTSTORE_CONFIG names the file too.
        """
        path = self.write_yaml("ClusterSize: 3\nGossipSeed: 127.0.0.1:2\n")
        config = _load([], {"EVENTSTORE_CONFIG": path})
        self.assertEqual(config.cluster_size, 3)
        self.assertEqual(config.config, path)

    def test_unknownEnvironmentIgnored(self) -> None:
        """
        EVENTSTORE_ variables that name no option are ignored but recorded;
        other variables are not looked at.
        """
        config = _load([], {"EVENTSTORE_INT_IPP": "x", "HOME": "/root"})
        self.assertEqual(config.ignored_environment, ("EVENTSTORE_INT_IPP",))
        self.assertEqual(config, NodeConfig())

    def test_misspeltPriorityVariable(self) -> None:
        """
        EVENTSTORE_NODE_PRORITY, as spelt in the Event Store docs, also sets
        NodePriority.
        """
        self.assertEqual(_load([], {"EVENTSTORE_NODE_PRORITY": "7"}).node_priority, 7)

    def test_yamlKeysCaseInsensitive(self) -> None:
        """
        YAML keys match case-insensitively.
        """
        path = self.write_yaml("intip: 127.0.0.7\nEXTIP: 127.0.0.8\n")
        config = _load(["--config", path])
        self.assertEqual((config.int_ip, config.ext_ip), ("127.0.0.7", "127.0.0.8"))

    def test_emptyFile(self) -> None:
        """
        An empty (or comment-only) file sets nothing.
        """
        path = self.write_yaml("# nothing\n")
        self.assertEqual(_load(["--config", path]), NodeConfig(config=path))

    def test_yamlTypes(self) -> None:
        """
        YAML values may be native or text; lists may be YAML lists or comma
        separated text.
        """
        path = self.write_yaml(
            "MemDb: 'yes'\nClusterSize: '3'\nGossipSeed: 127.0.0.1:1,127.0.0.1:2\n"
            "CertificatePassword: 1234\nExtHttpPrefixes: ['http://a:2113/', 'http://b:2113/']\n"
        )
        config = _load(["--config", path])
        self.assertEqual(config.mem_db, True)
        self.assertEqual(config.cluster_size, 3)
        self.assertEqual(len(config.gossip_seed), 2)
        self.assertEqual(config.certificate_password, "1234")
        self.assertEqual(config.ext_http_prefixes, ("http://a:2113/", "http://b:2113/"))


    def test_clusterDnsServer(self) -> None:
        """
        ClusterDnsServer is a host:port endpoint.
        """
        config = _load(["--cluster-dns-server", "127.0.0.1:5353"])
        self.assertEqual(config.cluster_dns_server, Endpoint("127.0.0.1", 5353))
        self.assertIsNone(NodeConfig().cluster_dns_server)

    @given(
        st.sampled_from(["IntTcpPort", "ExtHttpPort", "NodePriority", "GossipIntervalMs"]),
        st.lists(st.booleans(), min_size=3, max_size=3),
        st.lists(st.integers(3000, 3999), min_size=3, max_size=3, unique=True),
    )
    def test_highestSourceWins(self, name: str, present: list[bool], numbers: list[int]) -> None:
        """
        For any subset of file, environment and command line giving a value,
        the effective value is the highest one's, and its source is recorded.
        """
        opt = next(o for o in OPTIONS if o.name == name)
        in_file, in_env, in_cli = present
        args: list[str] = []
        environ = {}
        if in_file:
            args += ["--config", self.write_yaml(f"{name}: {numbers[0]}\n")]
        if in_env:
            environ[opt.env] = str(numbers[1])
        if in_cli:
            args += [f"--{opt.flag}", str(numbers[2])]
        config = _load(args, environ)
        expected, kind = opt.default, SourceKind.DEFAULT
        for given_here, number, source_kind in zip(
            present, numbers, [SourceKind.FILE, SourceKind.ENVIRONMENT, SourceKind.COMMAND_LINE],
            strict=True,
        ):
            if given_here:
                expected, kind = number, source_kind
        self.assertEqual(getattr(config, opt.attribute), expected)
        self.assertEqual(config.source_of(name).kind, kind)


class BadInputTests(_FileTestCase):
    """
    Each bad input gives one line naming the option and its source.
    """

    def assertConfigError(
        self, expected: str, args: Sequence[str] = (),
        environ: Optional[Mapping[str, str]] = None,
    ) -> str:
        e = self.assertRaises(ConfigError, _load, args, environ)
        message = str(e)
        self.assertNotIn("\n", message)
        self.assertIn(expected, message)
        return message

    def test_unknownYamlKey(self) -> None:
        """
        An unknown key names the file and line and suggests the nearest key.
        """
        path = self.write_yaml("IntIp: 127.0.0.1\nExtTcpPrt: 1113\n")
        self.assertConfigError(
            f"ExtTcpPrt (file {path}, line 2): not a known option (did you mean ExtTcpPort?)",
            ["--config", path],
        )

    def test_configKeyInFile(self) -> None:
        """
        The file cannot name another file.
        """
        path = self.write_yaml("Config: other.yaml\n")
        self.assertConfigError(
            f"Config (file {path}, line 1): cannot be set in a configuration file",
            ["--config", path],
        )

    def test_wrongTypeCommandLine(self) -> None:
        """
        A non-number for an integer option.
        """
        self.assertConfigError(
            "ExtTcpPort (command line --ext-tcp-port): expected an integer, got 'abc'",
            ["--ext-tcp-port", "abc"],
        )

    def test_wrongTypeEnvironment(self) -> None:
        """
        A bad boolean in the environment names the variable.
        """
        self.assertConfigError(
            "MemDb (environment EVENTSTORE_MEM_DB): expected true or false, got 'maybe'",
            [], {"EVENTSTORE_MEM_DB": "maybe"},
        )

    def test_wrongTypeFile(self) -> None:
        """
        A list for an integer option in the file.
        """
        path = self.write_yaml("\n\nClusterSize: [3]\n")
        self.assertConfigError(
            f"ClusterSize (file {path}, line 3): expected an integer, got [3]",
            ["--config", path],
        )

    def test_boolForInteger(self) -> None:
        """
        YAML true is not an integer.
        """
        path = self.write_yaml("ClusterSize: true\n")
        self.assertConfigError("expected an integer, got True", ["--config", path])

    def test_nullValue(self) -> None:
        """
        A key without a value is refused unless the option may be empty.
        """
        path = self.write_yaml("ClusterSize:\nCertificateFile:\n")
        self.assertConfigError(f"ClusterSize (file {path}, line 1): has no value",
                               ["--config", path])

    def test_badIp(self) -> None:
        """
        An IP option refuses non-addresses, from every source.
        """
        self.assertConfigError(
            "IntIp (command line --int-ip): '300.1.1.1' is not an IP address",
            ["--int-ip", "300.1.1.1"],
        )
        self.assertConfigError(
            "ExtIp (environment EVENTSTORE_EXT_IP): 'localhost' is not an IP address",
            [], {"EVENTSTORE_EXT_IP": "localhost"},
        )
        path = self.write_yaml("ExtIpAdvertiseAs: 1.2.3\n")
        self.assertConfigError(
            f"ExtIpAdvertiseAs (file {path}, line 1): '1.2.3' is not an IP address",
            ["--config", path],
        )

    def test_portOutOfRange(self) -> None:
        """
        Ports must be 1-65535 (0 only where it means off).
        """
        self.assertConfigError(
            "ExtHttpPort (command line --ext-http-port): port 70000 is out of range 1-65535",
            ["--ext-http-port", "70000"],
        )
        self.assertConfigError(
            "IntTcpPort (environment EVENTSTORE_INT_TCP_PORT): port 0 is out of range 1-65535",
            [], {"EVENTSTORE_INT_TCP_PORT": "0"},
        )
        self.assertConfigError(
            "ExtSecureTcpPort (command line --ext-secure-tcp-port): port -1 is out of range "
            "0-65535",
            ["--ext-secure-tcp-port", "-1"],
        )

    def test_sameEndpoint(self) -> None:
        """
        Two endpoints on one ip:port are refused, naming both options.
        """
        self.assertConfigError(
            "ExtHttpPort (command line --ext-http-port): endpoint 127.0.0.1:2112 is also used "
            "by IntHttpPort (default)",
            ["--ext-http-port", "2112"],
        )

    def test_sameEndpointWildcard(self) -> None:
        """
        0.0.0.0 overlaps every address.
        """
        self.assertConfigError(
            "ExtTcpPort (environment EVENTSTORE_EXT_TCP_PORT): endpoint 0.0.0.0:1112 is also "
            "used by IntTcpPort (default)",
            ["--ext-ip", "0.0.0.0"], {"EVENTSTORE_EXT_TCP_PORT": "1112"},
        )

    def test_samePortDifferentIps(self) -> None:
        """
        The same port on two different addresses is fine.
        """
        config = _load(["--int-ip", "127.0.0.2", "--int-tcp-port", "1113"])
        self.assertEqual((config.int_tcp_port, config.ext_tcp_port), (1113, 1113))

    def test_malformedGossipSeed(self) -> None:
        """
        A seed without a port, or with a bad one.
        """
        self.assertConfigError(
            "GossipSeed (command line --gossip-seed): '127.0.0.1' is not host:port",
            ["--gossip-seed", "127.0.0.1:2113,127.0.0.1"],
        )
        path = self.write_yaml("GossipSeed: ['127.0.0.1:99999']\n")
        self.assertConfigError(
            f"GossipSeed (file {path}, line 1): '127.0.0.1:99999': port 99999 is out of range",
            ["--config", path],
        )

    def test_unreadableFile(self) -> None:
        """
        A missing file is named with its source and the reason.
        """
        path = self.mktemp()
        self.assertConfigError(
            f"Config (command line --config): cannot read configuration file {path!r}: "
            "No such file or directory",
            ["--config", path],
        )

    def test_directoryAsFile(self) -> None:
        """
        A directory is not a configuration file.
        """
        path = self.mktemp()
        os.mkdir(path)
        self.assertConfigError(
            f"Config (environment EVENTSTORE_CONFIG): cannot read configuration file {path!r}",
            [], {"EVENTSTORE_CONFIG": path},
        )

    def test_yamlSyntaxError(self) -> None:
        """
        A YAML syntax error gives the file and the line number.
        """
        path = self.write_yaml("IntIp: 127.0.0.1\nExtIp: [127.0.0.1\nDb: x\n")
        message = self.assertConfigError(f"configuration file {path}, line ", ["--config", path])
        self.assertIn("YAML syntax error", message)
        path = self.write_yaml("IntIp: 127.0.0.1\n  ExtIp: x: y\n")
        self.assertConfigError(f"configuration file {path}, line 2: YAML syntax error",
                               ["--config", path])

    def test_yamlNotMapping(self) -> None:
        """
        The document must be a mapping.
        """
        path = self.write_yaml("- IntIp\n")
        self.assertConfigError(
            f"configuration file {path}, line 1: expected a mapping", ["--config", path]
        )

    def test_duplicateKey(self) -> None:
        """
        A key given twice in the file is refused.
        """
        path = self.write_yaml("IntIp: 127.0.0.1\nDb: x\nIntIp: 127.0.0.2\n")
        self.assertConfigError(
            f"IntIp (file {path}, line 3): given twice (first on line 1)", ["--config", path]
        )

    def test_readOnlyReplicaAlone(self) -> None:
        """
        A read-only replica needs a cluster.
        """
        self.assertConfigError(
            "ReadOnlyReplica (command line --read-only-replica): a read-only replica needs "
            "ClusterSize > 1 (ClusterSize is 1 from default)",
            ["--read-only-replica"],
        )

    def test_clusterWithoutDiscovery(self) -> None:
        """
        A cluster with DNS discovery off needs seeds.
        """
        self.assertConfigError(
            "GossipSeed (default): no gossip seeds, but ClusterSize is 3",
            ["--cluster-size", "3", "--discover-via-dns=false"],
        )

    def test_singleNodeManySeeds(self) -> None:
        """
        A one-node cluster with several seeds is refused (cluster.md 2.1).
        """
        self.assertConfigError(
            "GossipSeed (command line --gossip-seed): 2 seeds given but ClusterSize is 1",
            ["--gossip-seed", "127.0.0.1:1,127.0.0.1:2"],
        )

    def test_indexIsDb(self) -> None:
        """
        The index directory must differ from the database directory.
        """
        self.assertConfigError(
            "Index (command line --index): must differ from Db",
            ["--db", "/tmp/x", "--index", "/tmp/x/"],
        )

    def test_acknowledgementCounts(self) -> None:
        """
        CommitCount and PrepareCount are -1 or 1..ClusterSize.
        """
        self.assertConfigError(
            "CommitCount (command line --commit-count): must be -1 (a quorum) or 1..ClusterSize",
            ["--commit-count", "2"],
        )
        self.assertConfigError(
            "PrepareCount (command line --prepare-count): must be at least -1, got -2",
            ["--prepare-count", "-2"],
        )

    def test_tlsNeedsCertificate(self) -> None:
        """
        TLS ports need a certificate; a key needs a certificate.
        """
        self.assertConfigError(
            "ExtSecureTcpPort (command line --ext-secure-tcp-port): a TLS port needs "
            "CertificateFile",
            ["--ext-secure-tcp-port", "1115"],
        )
        self.assertConfigError(
            "CertificatePrivateKeyFile (command line --certificate-private-key-file): needs "
            "CertificateFile",
            ["--certificate-private-key-file", "k.pem"],
        )

    def test_badChoice(self) -> None:
        """
        RunProjections takes one of three words.
        """
        self.assertConfigError(
            "RunProjections (command line --run-projections): must be one of None, System, All",
            ["--run-projections", "some"],
        )

    def test_badDnsName(self) -> None:
        """
        ClusterDns must be a DNS name.
        """
        self.assertConfigError(
            "ClusterDns (command line --cluster-dns): 'bad name' is not a valid DNS name",
            ["--cluster-dns", "bad name"],
        )

    def test_badValueOverriddenStillReported(self) -> None:
        """
        A bad value is reported even where a higher source overrides it, so
        a broken file is never silently ignored.
        """
        path = self.write_yaml("IntTcpPort: lots\n")
        self.assertConfigError(f"IntTcpPort (file {path}, line 1)",
                               ["--config", path, "--int-tcp-port", "1112"])


class SeedDocumentTests(_FileTestCase):
    """
    The examples of the seed documents are accepted.
    """

    def test_commandLines(self) -> None:
        """
        Every command line of the OSS cluster guides parses with the values
        it spells out.
        """
        for line in SEED_COMMAND_LINES:
            config = _load(line.split())
            self.assertEqual(config.cluster_size, 3)
            self.assertEqual(config.int_tcp_port, 1111 if "192.168" in line
                             else int(line.split("--int-tcp-port=")[1][:4]))
            self.assertEqual(config.mem_db, line.startswith("--mem-db"))
            self.assertTrue(config.log)
            if "--discover-via-dns=false" in line:
                self.assertFalse(config.discover_via_dns)
                self.assertEqual(len(config.gossip_seed), 2)
            else:
                self.assertEqual(config.cluster_dns, "mydomain.com")
                self.assertEqual(config.cluster_gossip_port, 2113)

    def test_loopbackCluster(self) -> None:
        """
        The loopback cluster of the guide: node 1's exact values.
        """
        config = _load(SEED_COMMAND_LINES[0].split())
        self.assertEqual(
            (config.log, config.int_ip, config.ext_ip, config.int_tcp_port, config.ext_tcp_port,
             config.int_http_port, config.ext_http_port, config.gossip_seed),
            (r".\logs\log1", "127.0.0.1", "127.0.0.1", 1111, 1112, 1113, 1114,
             (Endpoint("127.0.0.1", 2113), Endpoint("127.0.0.1", 3113))),
        )

    def test_databaseYaml(self) -> None:
        """
        The manager guide's database.yaml.
        """
        config = _load(["--config", self.write_yaml(SEED_DATABASE_YAML)])
        self.assertEqual(config.db, r"d:\es-data")
        self.assertEqual(config.gossip_seed, (Endpoint("192.168.1.11", 30777),))
        self.assertEqual((config.int_tcp_port, config.int_http_port, config.ext_tcp_port,
                          config.ext_http_port, config.cluster_size), (1112, 2112, 1113, 2113, 3))

    def test_managerYaml(self) -> None:
        """
        The manager guide's manager.yaml parses; the manager options are
        reported as not yet implemented.
        """
        config = _load(["--config", self.write_yaml(SEED_MANAGER_YAML)])
        self.assertEqual(config.cluster_dns, "cluster1.eventstore.local")
        self.assertEqual(config.watchdog_config, r"c:\EventStore-Config\watchdog.esconfig")
        self.assertEqual(config.not_implemented_in_use(), ["EnableWatchdog", "WatchdogConfig"])

    def test_watchdogLine(self) -> None:
        """
        The watchdog file's node line is a command line.
        """
        self.assertEqual(
            canonical_arguments(r"--config c:\EventStore-Config\database.yaml".split()),
            [r"--config=c:\EventStore-Config\database.yaml"],
        )

    def test_options21(self) -> None:
        """
        Each option of the 21.x clustering guide works as flag, YAML key and
        environment variable.
        """
        for flag, key, env, text, attribute, expected in SEED_21_OPTIONS:
            base = ["--cluster-size", "5", "--gossip-seed", "127.0.0.1:1"]
            if attribute in ("cluster_size", "gossip_seed"):
                base = ["--cluster-size", "5"] if attribute == "gossip_seed" else [
                    "--gossip-seed", "127.0.0.1:1"]
            by_flag = _load(base + [flag, text])
            by_env = _load(base, {env: text})
            by_file = _load(base + ["--config", self.write_yaml(f"{key}: {text}\n")])
            for config in (by_flag, by_env, by_file):
                self.assertEqual(getattr(config, attribute), expected, (flag, config.sources))


class WhatIfTests(_FileTestCase):
    """
    L{render_options}.
    """

    def test_sections(self) -> None:
        """
        Modified options come first, then defaults, each NAME: value (source).
        """
        path = self.write_yaml("ClusterSize: 3\nGossipSeed: ['127.0.0.1:2113']\n")
        config = _load(["--config", path, "--int-ip", "127.0.0.4"],
                       {"EVENTSTORE_MEM_DB": "1"})
        text = render_options(config)
        modified, _, defaults = text.partition("DEFAULT OPTIONS:")
        self.assertTrue(modified.startswith("MODIFIED OPTIONS:\n"))
        lines = [line.split() for line in modified.splitlines()]
        self.assertIn(["INT", "IP:", "127.0.0.4", "(command", "line", "--int-ip)"], lines)
        self.assertIn(["MEM", "DB:", "true", "(environment", "EVENTSTORE_MEM_DB)"], lines)
        self.assertIn(["CLUSTER", "SIZE:", "3", "(file", f"{path},", "line", "1)"], lines)
        self.assertIn("GOSSIP SEED:", modified)
        self.assertIn("EXT TCP PORT:", defaults)
        self.assertNotIn("INT IP:", defaults)
        self.assertIn("1113 (default)", defaults)
        self.assertEqual(text.count(" (default)"),
                         len(OPTIONS) - len(config.sources))

    def test_secretsHidden(self) -> None:
        """
        The certificate password is never printed.
        """
        text = render_options(_load(["--certificate-password", "hunter2"]))
        self.assertNotIn("hunter2", text)
        self.assertIn("CERTIFICATE PASSWORD:", text)
        self.assertIn("****", text)

    def test_notImplementedMarked(self) -> None:
        """
        Options set but not implemented yet are marked.
        """
        text = render_options(_load(["--gossip-on-single-node", "true"]))
        line = next(x for x in text.splitlines() if "GOSSIP ON SINGLE NODE" in x)
        self.assertIn("[accepted, not yet implemented]", line)
        # not implemented on purpose: the reason is shown (docs/v5-options.md)
        text = render_options(_load(["--stats-period-sec", "10"]))
        line = next(x for x in text.splitlines() if "STATS PERIOD SEC" in x)
        self.assertIn("[accepted, no effect here: statistics are computed", line)
        # projections are implemented (issue 16)
        text = render_options(_load(["--run-projections", "All"]))
        line = next(x for x in text.splitlines() if "RUN PROJECTIONS" in x)
        self.assertNotIn("not yet implemented", line)

    def test_ignoredEnvironment(self) -> None:
        """
        Ignored EVENTSTORE_ variables are listed with a suggestion.
        """
        text = render_options(_load([], {"EVENTSTORE_CLUSTER_SIZ": "3"}))
        self.assertIn("EVENTSTORE_CLUSTER_SIZ (did you mean EVENTSTORE_CLUSTER_SIZE?)", text)


class StartupWarningTests(SynchronousTestCase):
    """
    L{startup_warnings}.
    """

    def test_nothingToSay(self) -> None:
        """
        A plain configuration has no warnings.
        """
        self.assertEqual(startup_warnings(NodeConfig()), [])

    def test_warnings(self) -> None:
        """
        Not-implemented options in use and unknown EVENTSTORE_ variables are
        reported, one line each.
        """
        config = _load(["--enable-watchdog", "false"], {"EVENTSTORE_MEMDB": "1"})
        self.assertEqual(
            startup_warnings(config),
            ["EnableWatchdog (command line --enable-watchdog) is accepted but not yet "
             "implemented; it has no effect",
             "environment variable EVENTSTORE_MEMDB names no option and is ignored "
             "(did you mean EVENTSTORE_MEM_DB?)"],
        )


class NoEffectOptionTests(SynchronousTestCase):
    """
    Options not implemented on purpose say why (docs/v5-options.md); the
    issue-15 options that are implemented are not marked.
    """

    def test_why_in_warnings(self) -> None:
        config = _load(["--unsafe-allow-surplus-nodes", "true"])
        (line,) = startup_warnings(config)
        self.assertIn("UnsafeAllowSurplusNodes (command line --unsafe-allow-surplus-nodes) "
                      "is accepted but has no effect here: a node beyond ClusterSize always "
                      "joins as a clone", line)

    def test_implemented_not_marked(self) -> None:
        config = _load([
            "--enable-trusted-auth", "true", "--disable-http-caching", "true",
            "--unsafe-ignore-hard-delete", "true", "--max-truncation", "5",
            "--ext-http-prefixes", "http://*:2113/", "--int-http-prefixes", "http://*:2112/",
        ])
        self.assertEqual(config.not_implemented_in_use(), [])
        self.assertNotIn("accepted", render_options(config))


class SampleFileTests(SynchronousTestCase):
    """
    Every sample under etc/ loads.
    """

    def etc(self) -> FilePath[str]:
        etc = FilePath(os.path.dirname(os.path.abspath(estwisted.__file__))).sibling("etc")
        if not etc.isdir():
            raise self.skipTest("etc/ is not next to the package (not a source checkout)")
        return etc

    def test_everySampleLoads(self) -> None:
        """
        Each etc/*.yaml file is a valid configuration.
        """
        files = sorted(self.etc().globChildren("*.yaml"))
        self.assertTrue(files)
        for path in files:
            config = _load(["--config", path.path])
            self.assertEqual(config.source_of("Config").kind, SourceKind.COMMAND_LINE)

    def test_clusterSamples(self) -> None:
        """
        The three cluster samples form the guide's loopback cluster: each
        node's seeds are the other nodes' internal HTTP endpoints.
        """
        configs = [_load(["--config", self.etc().child(f"cluster-node{n}.yaml").path])
                   for n in (1, 2, 3)]
        gossip = {Endpoint(c.int_ip, c.int_http_port) for c in configs}
        for n, config in enumerate(configs, 1):
            self.assertEqual(config.cluster_size, 3)
            self.assertEqual(
                (config.int_tcp_port, config.ext_tcp_port, config.int_http_port,
                 config.ext_http_port),
                (n * 1000 + 111, n * 1000 + 112, n * 1000 + 113, n * 1000 + 114),
            )
            self.assertEqual(set(config.gossip_seed),
                             gossip - {Endpoint(config.int_ip, config.int_http_port)})

    def test_nodeSample(self) -> None:
        """
        etc/node.yaml spells out the defaults.
        """
        config = _load(["--config", self.etc().child("node.yaml").path])
        self.assertEqual(attrs.evolve(config, config=None), NodeConfig())


class FirstLevelAuthorizationOptionTests(SynchronousTestCase):
    def test_names(self) -> None:
        """
        C{DisableFirstLevelHttpAuthorization} is off by default and set by
        its flag, its environment variable and its YAML key.
        """
        self.assertFalse(_load().disable_first_level_http_authorization)
        self.assertTrue(
            _load(["--disable-first-level-http-authorization"]).disable_first_level_http_authorization
        )
        env = {"EVENTSTORE_DISABLE_FIRST_LEVEL_HTTP_AUTHORIZATION": "true"}
        self.assertTrue(_load(environ=env).disable_first_level_http_authorization)
        config = load_config(
            command_line={"Config": "/x.yaml"},
            read_file=lambda path, source: "DisableFirstLevelHttpAuthorization: true\n",
        )
        self.assertTrue(config.disable_first_level_http_authorization)
