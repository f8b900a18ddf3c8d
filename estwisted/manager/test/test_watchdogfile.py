# -*- test-case-name: estwisted.manager.test.test_watchdogfile -*-
"""
Tests for L{estwisted.manager.watchdogfile}.
"""

from __future__ import annotations

import shlex

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from estwisted.core.errors import ConfigError
from estwisted.manager.watchdogfile import NodeSpec, parse_watchdog_text, read_watchdog_file

_word = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")),
    min_size=1,
    max_size=12,
)
_arguments = st.lists(_word, min_size=1, max_size=4).map(tuple)
_blank = st.sampled_from(["", "   ", "\t"])


class ParseTests(SynchronousTestCase):
    """
    L{parse_watchdog_text} reads the guide's format.
    """

    def test_guideExample(self) -> None:
        """
        The guide's one-line file gives one node with C{--config path}.
        """
        self.assertEqual(
            parse_watchdog_text("# --config /etc/estore/database.yaml\n", "w"),
            (NodeSpec(1, 1, ("--config", "/etc/estore/database.yaml")),),
        )

    def test_emptyLinesIgnored(self) -> None:
        """
        Blank lines are skipped; line numbers count them.
        """
        specs = parse_watchdog_text("\n  \n#--config a.yaml\n\n# --config 'b c.yaml'\n", "w")
        self.assertEqual(
            specs,
            (NodeSpec(1, 3, ("--config", "a.yaml")), NodeSpec(2, 5, ("--config", "b c.yaml"))),
        )

    def test_otherLineRefused(self) -> None:
        """
        A line not starting with C{#} is refused, naming the file and line.
        """
        e = self.assertRaises(ConfigError, parse_watchdog_text, "# --config a\n--config b\n", "w")
        self.assertIn("watchdog file w, line 2:", str(e))
        self.assertNotIn("\n", str(e))

    def test_emptyHashRefused(self) -> None:
        """
        A C{#} followed by nothing is refused.
        """
        e = self.assertRaises(ConfigError, parse_watchdog_text, "#   \n", "w")
        self.assertIn("line 1", str(e))

    def test_unbalancedQuoteRefused(self) -> None:
        """
        Unbalanced quotes are refused with the line number.
        """
        e = self.assertRaises(ConfigError, parse_watchdog_text, "\n# --config 'a\n", "w")
        self.assertIn("line 2", str(e))

    def test_missingFile(self) -> None:
        """
        A missing file is refused with one line naming it.
        """
        e = self.assertRaises(ConfigError, read_watchdog_file, "/nonexistent/watchdog.esconfig")
        self.assertIn("/nonexistent/watchdog.esconfig", str(e))
        self.assertNotIn("\n", str(e))

    @given(st.lists(st.one_of(_arguments, _blank), max_size=8))
    def test_roundTrip(self, lines: list[object]) -> None:
        """
        Lines written as C{# } plus shell-quoted arguments, with blank lines
        in between, parse back to the same arguments, numbered and with
        their line numbers.
        """
        text = "\n".join(
            "# " + shlex.join(item) if isinstance(item, tuple) else str(item) for item in lines
        )
        expected: list[NodeSpec] = []
        for number, item in enumerate(lines, start=1):
            if isinstance(item, tuple):
                expected.append(NodeSpec(len(expected) + 1, number, item))
        self.assertEqual(parse_watchdog_text(text, "w"), tuple(expected))

    @given(
        st.lists(st.one_of(_arguments, _blank), max_size=5),
        st.text(min_size=1).filter(lambda s: s.strip() != "" and "\n" not in s
                                   and "\r" not in s and not s.strip().startswith("#")
                                   and len(s.splitlines()) == 1),
    )
    def test_strayLineRefused(self, before: list[object], stray: str) -> None:
        """
        Any non-blank line that does not start with C{#} is refused with
        its own line number.
        """
        lines = [
            "# " + shlex.join(item) if isinstance(item, tuple) else str(item) for item in before
        ]
        text = "\n".join([*lines, stray])
        e = self.assertRaises(ConfigError, parse_watchdog_text, text, "w")
        self.assertIn(f"line {len(lines) + 1}:", str(e))
