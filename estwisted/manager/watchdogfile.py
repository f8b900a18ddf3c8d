# -*- test-case-name: estwisted.manager.test.test_watchdogfile -*-
"""
The watchdog configuration file, in the format of the Event Store manager
guide: one line per supervised database node, starting with C{#}, then the
command-line options given to that node::

    # --config /etc/estore/database.yaml

Empty (or blank) lines are ignored; any other line is refused with its line
number.  The options are split as a POSIX shell would split them (quotes
group words) but no shell ever runs them.

Pure: L{parse_watchdog_text} takes text; L{read_watchdog_file} reads one
file and turns any failure into one L{ConfigError} line.
"""

from __future__ import annotations

import shlex

from attrs import frozen

from estwisted.core.errors import ConfigError

__all__ = ["NodeSpec", "parse_watchdog_text", "read_watchdog_file"]


@frozen
class NodeSpec:
    """
    One supervised node.

    @ivar index: its position in the file, from 1 (names its log and pid
        files: C{node-<index>.log}).
    @ivar line: the line number it was read from.
    @ivar arguments: the node's command-line options.
    """

    index: int
    line: int
    arguments: tuple[str, ...]


def parse_watchdog_text(text: str, path: str) -> tuple[NodeSpec, ...]:
    """
    Parse the watchdog file's text.

    @param path: the file name, for messages.
    @raise ConfigError: a line that is neither empty nor C{#} followed by
        options, or unbalanced quotes; the message names the line.
    """
    specs: list[NodeSpec] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        if not line.startswith("#"):
            raise ConfigError(
                f"watchdog file {path}, line {number}: expected '#' followed by the "
                f"node's options (e.g. # --config /path/database.yaml), got {raw.strip()!r}"
            )
        try:
            arguments = tuple(shlex.split(line[1:]))
        except ValueError as e:
            raise ConfigError(f"watchdog file {path}, line {number}: {e}") from None
        if not arguments:
            raise ConfigError(
                f"watchdog file {path}, line {number}: '#' is followed by no options"
            )
        specs.append(NodeSpec(len(specs) + 1, number, arguments))
    return tuple(specs)


def read_watchdog_file(path: str) -> tuple[NodeSpec, ...]:
    """
    Read and parse the watchdog file.

    @raise ConfigError: it cannot be read, is not UTF-8, or a line is wrong.
    """
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ConfigError(
            f"WatchdogConfig: cannot read watchdog file {path!r}: {e.strerror or e}"
        ) from None
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"WatchdogConfig: watchdog file {path!r} is not UTF-8 text: {e.reason}"
        ) from None
    return parse_watchdog_text(text, path)
