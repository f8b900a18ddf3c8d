# -*- test-case-name: estwisted.node.test.test_tap -*-
"""
The C{twistd estore} plugin: command-line options and the service maker.

C{twistd -n estore [options]} hands us only the arguments after C{estore};
twistd's own options (C{-n}, C{--pidfile}, C{--logfile}) stay twistd's.
Every option of L{estwisted.node.config.OPTIONS} has a flag here, generated from
the table; L{Options.postOptions} merges defaults, the YAML file, the
environment and the command line into a L{estwisted.node.config.NodeConfig}.

This is the only module that imports the global reactor, and only inside
L{makeService}.
"""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Mapping, Sequence
from typing import IO, Any, Optional, cast

from twisted.application.service import IService
from twisted.python import usage

from estwisted.node.config import (
    OPTIONS,
    ConfigError,
    NodeConfig,
    Option,
    canonical_arguments,
    load_config,
    render_options,
)


def _flag_help(opt: Option) -> str:
    default = opt.show(opt.default)
    text = f"{opt.help} [default: {default}; YAML {opt.name}; env {opt.env}]"
    if not opt.implemented:
        text += " (accepted, not yet implemented)"
    return text


class Options(usage.Options):
    """
    Options for C{twistd estore}.

    @ivar config: the merged, validated L{NodeConfig} once parsed.
    """

    synopsis = "[--config node.yaml] [--int-ip IP] [--ext-tcp-port PORT] ... [--what-if]"

    longdesc = (
        "Run one estwisted node. Every option can also be given as a YAML key in "
        "the --config file (PascalCase, e.g. IntIp) or as an environment variable "
        "(EVENTSTORE_INT_IP); precedence: defaults < file < environment < command "
        "line. Flags are case-insensitive (--IntIp works) and booleans may be bare "
        "or followed by true/false. With no options: a single node on 127.0.0.1 "
        "with default ports and data under ./estore-data."
    )

    optParameters = [[opt.flag, None, None, _flag_help(opt)] for opt in OPTIONS]

    config: NodeConfig

    def __init__(
        self,
        environ: Optional[Mapping[str, str]] = None,
        stdout: Optional[IO[str]] = None,
    ) -> None:
        """
        @param environ: the environment to read C{EVENTSTORE_*} variables
            from; default C{os.environ}.
        @param stdout: where C{--what-if} prints; default C{sys.stdout}.
        """
        super().__init__()  # type: ignore[no-untyped-call]
        self._environ = os.environ if environ is None else environ
        self._stdout = stdout
        self._failed = False

    def parseOptions(self, options: Optional[Sequence[str]] = None) -> None:
        """
        Rewrite the v5-style spellings into canonical C{--flag=value} form,
        then parse as usual.
        """
        if options is None:
            options = sys.argv[1:]
        try:
            try:
                canonical = canonical_arguments(options)
            except ConfigError as e:
                raise usage.UsageError(str(e)) from None
            super().parseOptions(canonical)  # type: ignore[no-untyped-call]
        except usage.UsageError:
            self._failed = True
            raise

    def getUsage(self, width: Optional[int] = None) -> str:
        """
        The full option list, except after a usage error: twistd prints the
        usage before the error line, and one clear line is better than
        several hundred lines followed by it.
        """
        if self._failed:
            return "estore: see 'twistd estore --help' for every option.\n"
        text: str = super().getUsage(width)
        return text

    def postOptions(self) -> None:
        """
        Merge and validate every source; print and exit for C{--what-if}.

        @raise usage.UsageError: one line naming the option and its source.
        @raise SystemExit: with code 0 after printing, for C{--what-if}.
        """
        command_line = {
            opt.name: self[opt.flag] for opt in OPTIONS if self.get(opt.flag) is not None
        }
        try:
            self.config = load_config(command_line=command_line, environ=self._environ)
        except ConfigError as e:
            raise usage.UsageError(str(e)) from None
        if self.config.what_if:
            out = self._stdout if self._stdout is not None else sys.stdout
            out.write(render_options(self.config))
            out.flush()
            raise SystemExit(0)


def makeService(options: Any) -> IService:
    """
    Build the node's service tree from parsed L{Options}.
    """
    from twisted.internet import reactor

    from estwisted.node.service import INodeReactor, StartupError, make_node_service

    # Long-lived objects (the index, caches) are frozen out of the cyclic
    # collector once storage is open; a higher first threshold keeps the
    # collector from running every few hundred requests on the hot paths.
    gc.set_threshold(50_000, 20, 100)
    try:
        service = make_node_service(options.config, cast(INodeReactor, reactor))
    except StartupError as e:
        # Nothing listens yet: exit non-zero with the reason on one line.
        raise SystemExit(f"estore: {e}") from None
    return service
