# -*- test-case-name: estwisted.manager.test.test_tap -*-
"""
The C{twistd estore-manager} plugin: command-line options and the service
maker.

C{twistd -n estore-manager --config manager.yaml} runs a manager in the
foreground; C{twistd --pidfile … --logfile … estore-manager --config …}
daemonizes it as any twistd application.  Every option of
L{estwisted.manager.config.MANAGER_OPTIONS} has a flag here; the watchdog
file is read and every node's options are checked (as that node would check
them, its YAML file included) before anything starts.

The only manager module that imports the global reactor, inside
L{makeService}.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from typing import IO, Any, Optional

from twisted.application.service import IService
from twisted.python import usage

from estwisted.core.errors import ConfigError
from estwisted.manager.config import (
    MANAGER_OPTIONS,
    ManagerConfig,
    canonical_manager_arguments,
    load_manager_config,
    render_manager_options,
)
from estwisted.manager.watchdog import node_environment
from estwisted.manager.watchdogfile import NodeSpec, read_watchdog_file
from estwisted.node.config import Option, canonical_arguments, load_config

__all__ = ["Options", "check_node_arguments", "makeService"]


def _flag_help(opt: Option) -> str:
    text = f"{opt.help} [default: {opt.show(opt.default)}; YAML {opt.name}; env {opt.env}]"
    if not opt.implemented:
        text += " (accepted, not yet implemented)"
    return text


def check_node_arguments(spec: NodeSpec, path: str, environ: Mapping[str, str]) -> None:
    """
    Check one node's options as C{twistd estore} would (flags, its YAML
    file, its environment).

    @raise ConfigError: naming the watchdog file line.
    """
    try:
        canonical = canonical_arguments(spec.arguments)
        command_line: dict[str, str] = {}
        for arg in canonical:
            if not arg.startswith("--") or "=" not in arg:
                raise ConfigError(f"{arg} is not a node option")
            flag, _, value = arg[2:].partition("=")
            command_line[flag] = value
        load_config(command_line=command_line, environ=environ)
    except ConfigError as e:
        raise ConfigError(f"watchdog file {path}, line {spec.line}: {e}") from None


class Options(usage.Options):
    """
    Options for C{twistd estore-manager}.

    @ivar config: the merged, validated L{ManagerConfig} once parsed.
    @ivar nodes: the watchdog file's nodes (empty with the watchdog off).
    """

    synopsis = "[--config manager.yaml] [--int-ip IP] ... [--what-if]"

    longdesc = (
        "Run an estwisted manager node: it starts and supervises the database nodes "
        "listed in WatchdogConfig, gossips with the other managers and answers GET "
        "/gossip for clients. Options as for estore: YAML keys (PascalCase), "
        "EVENTSTORE_* variables, flags; defaults < file < environment < command line."
    )

    optParameters = [[opt.flag, None, None, _flag_help(opt)] for opt in MANAGER_OPTIONS]

    config: ManagerConfig
    nodes: tuple[NodeSpec, ...] = ()

    def __init__(
        self,
        environ: Optional[Mapping[str, str]] = None,
        stdout: Optional[IO[str]] = None,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._environ = os.environ if environ is None else environ
        self._stdout = stdout
        self._failed = False

    def parseOptions(self, options: Optional[Sequence[str]] = None) -> None:
        if options is None:
            options = sys.argv[1:]
        try:
            try:
                canonical = canonical_manager_arguments(options)
            except ConfigError as e:
                raise usage.UsageError(str(e)) from None
            super().parseOptions(canonical)  # type: ignore[no-untyped-call]
        except usage.UsageError:
            self._failed = True
            raise

    def getUsage(self, width: Optional[int] = None) -> str:
        if self._failed:
            return "estore-manager: see 'twistd estore-manager --help' for every option.\n"
        text: str = super().getUsage(width)
        return text

    def postOptions(self) -> None:
        """
        Merge and validate; read and check the watchdog file; print and
        exit for C{--what-if}.

        @raise usage.UsageError: one line naming the option and its source.
        """
        command_line = {
            opt.name: self[opt.flag]
            for opt in MANAGER_OPTIONS
            if self.get(opt.flag) is not None
        }
        try:
            self.config = load_manager_config(command_line=command_line, environ=self._environ)
            if self.config.enable_watchdog and self.config.watchdog_config:
                path = self.config.watchdog_config
                self.nodes = read_watchdog_file(path)
                for spec in self.nodes:
                    check_node_arguments(spec, path, node_environment(self._environ))
        except ConfigError as e:
            raise usage.UsageError(str(e)) from None
        if self.config.what_if:
            out = self._stdout if self._stdout is not None else sys.stdout
            out.write(render_manager_options(self.config))
            if self.config.enable_watchdog:
                out.write("\nWATCHDOG NODES:\n\n")
                for spec in self.nodes:
                    out.write(f"    node-{spec.index} (line {spec.line}): "
                              f"{' '.join(spec.arguments)}\n")
                if not self.nodes:
                    out.write("    (none)\n")
            out.flush()
            raise SystemExit(0)


def makeService(options: Any) -> IService:
    """
    Build the manager's service tree from parsed L{Options}.
    """
    from twisted.internet import reactor

    from estwisted.manager.service import StartupError, make_manager_service

    try:
        return make_manager_service(options.config, options.nodes, reactor)
    except StartupError as e:
        # Nothing listens and no node was started: exit non-zero, one line.
        raise SystemExit(f"estore-manager: {e}") from None
