# -*- test-case-name: estwisted.manager.test.test_config -*-
"""
Tests for L{estwisted.manager.config}: precedence of the four sources, as
a property.
"""

from __future__ import annotations

from typing import Optional

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from estwisted.manager.config import (
    MANAGER_OPTIONS,
    canonical_manager_arguments,
    load_manager_config,
)
from estwisted.node.config import Source, SourceKind

#: Port 1 is IntHttpPort in the file, so never ExtHttpPort.
_port = st.integers(2, 65535)


class PrecedenceTests(SynchronousTestCase):
    """
    Default < file < environment < command line, for any combination.
    """

    @given(st.one_of(st.none(), _port), st.one_of(st.none(), _port),
           st.one_of(st.none(), _port))
    def test_highestSourceWins(self, in_file: Optional[int], in_env: Optional[int],
                               on_line: Optional[int]) -> None:
        """
        The effective C{ExtHttpPort} comes from the highest source that
        gives one, and its source says so.
        """
        text = "EnableWatchdog: false\nIntHttpPort: 1\n"
        if in_file is not None:
            text += f"ExtHttpPort: {in_file}\n"
        environ = {} if in_env is None else {"EVENTSTORE_EXT_HTTP_PORT": str(in_env)}
        command_line = {"Config": "m.yaml"}
        if on_line is not None:
            command_line["ExtHttpPort"] = str(on_line)

        def read(path: str, source: Source) -> str:
            return text

        config = load_manager_config(command_line, environ, read_file=read)
        expected = [(30778, SourceKind.DEFAULT)]
        for value, kind in ((in_file, SourceKind.FILE), (in_env, SourceKind.ENVIRONMENT),
                            (on_line, SourceKind.COMMAND_LINE)):
            if value is not None:
                expected.append((value, kind))
        value, kind = expected[-1]
        self.assertEqual((config.ext_http_port, config.source_of("ExtHttpPort").kind),
                         (value, kind))

    @given(st.sampled_from([o for o in MANAGER_OPTIONS if not o.kind.is_bool]),
           st.sampled_from(["--{flag}", "-{name}", "--{name}"]))
    def test_spellings(self, opt: object, spelling: str) -> None:
        """
        Every option can be spelled as a node's options are.
        """
        flag = spelling.format(flag=opt.flag, name=opt.name)  # type: ignore[attr-defined]
        self.assertEqual(canonical_manager_arguments([flag, "x"]),
                         [f"--{opt.flag}=x"])  # type: ignore[attr-defined]
