"""
Tests for L{estwisted.core.acl}.
"""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from estwisted.core import acl
from estwisted.core.model import Principal

ADMIN = Principal("root", frozenset({"$admins"}))
ALICE = Principal("alice", frozenset({"devs"}))

roles = st.lists(st.sampled_from(["$all", "$admins", "devs", "alice", "bob", "$ops"]), max_size=3)
principals = st.one_of(
    st.none(),
    st.builds(
        Principal,
        st.sampled_from(["alice", "bob", "carol"]),
        st.frozensets(st.sampled_from(["devs", "$ops", "$admins", "x"]), max_size=2),
    ),
)


class ParseTests(SynchronousTestCase):
    def test_string_and_list(self) -> None:
        parsed = acl.parse_acl({"$r": "devs", "$w": ["a", "b"], "$d": 5})
        self.assertEqual(parsed, acl.StreamAcl(read=("devs",), write=("a", "b")))

    def test_not_object(self) -> None:
        self.assertIsNone(acl.parse_acl("$all"))
        self.assertIsNone(acl.parse_acl(None))

    def test_settings(self) -> None:
        settings = acl.parse_settings(
            json.dumps({"$userStreamAcl": {"$r": "x"}, "$systemStreamAcl": {"$w": "y"}}).encode()
        )
        self.assertEqual(settings.user_stream_acl, acl.StreamAcl(read=("x",)))
        self.assertEqual(settings.system_stream_acl, acl.StreamAcl(write=("y",)))
        self.assertEqual(acl.parse_settings(b"nope"), acl.NO_SETTINGS)
        self.assertEqual(acl.parse_settings(b"[]"), acl.NO_SETTINGS)

    @given(
        st.dictionaries(
            st.sampled_from(acl.OPERATIONS), st.lists(st.text(max_size=5), min_size=1, max_size=3)
        )
    )
    def test_round_trip(self, value: dict[str, list[str]]) -> None:
        """
        L{StreamAcl.to_json} parses back to the same ACL.
        """
        parsed = acl.parse_acl(value)
        assert parsed is not None
        self.assertEqual(acl.parse_acl(parsed.to_json()), parsed)


class DecisionTests(SynchronousTestCase):
    def test_built_in_defaults(self) -> None:
        for op in acl.OPERATIONS:
            self.assertTrue(acl.is_allowed(None, "orders", op, None, acl.NO_SETTINGS))
            self.assertFalse(acl.is_allowed(None, "$stats", op, None, acl.NO_SETTINGS))
            self.assertFalse(acl.is_allowed(ALICE, "$stats", op, None, acl.NO_SETTINGS))
            self.assertTrue(acl.is_allowed(ADMIN, "$stats", op, None, acl.NO_SETTINGS))

    def test_stream_acl_then_settings_then_default(self) -> None:
        stream_acl = acl.StreamAcl(read=("devs",))
        settings = acl.SystemSettings(user_stream_acl=acl.StreamAcl(read=("x",), write=("bob",)))
        self.assertTrue(acl.is_allowed(ALICE, "s", acl.READ, stream_acl, settings))
        self.assertFalse(acl.is_allowed(None, "s", acl.READ, stream_acl, settings))
        self.assertFalse(acl.is_allowed(ALICE, "s", acl.WRITE, stream_acl, settings))
        self.assertTrue(acl.is_allowed(Principal("bob"), "s", acl.WRITE, stream_acl, settings))
        self.assertTrue(acl.is_allowed(None, "s", acl.DELETE, stream_acl, settings))

    def test_login_is_a_role(self) -> None:
        self.assertTrue(acl.has_role(ALICE, ("alice",)))
        self.assertFalse(acl.has_role(None, ("alice",)))
        self.assertTrue(acl.has_role(None, ("x", "$all")))

    def test_resolve_operation(self) -> None:
        self.assertEqual(acl.resolve_operation("$$s", acl.READ), ("s", acl.META_READ))
        self.assertEqual(acl.resolve_operation("$$s", acl.WRITE), ("s", acl.META_WRITE))
        self.assertIsNone(acl.resolve_operation("$$s", acl.DELETE))
        self.assertIsNone(acl.resolve_operation("$$s", acl.META_READ))
        self.assertIsNone(acl.resolve_operation("$all", acl.WRITE))
        self.assertIsNone(acl.resolve_operation("$all", acl.DELETE))
        self.assertEqual(acl.resolve_operation("$all", acl.READ), ("$all", acl.READ))
        self.assertEqual(acl.resolve_operation("s", acl.DELETE), ("s", acl.DELETE))

    def test_all_is_system(self) -> None:
        self.assertFalse(acl.is_allowed(None, "$all", acl.READ, None, acl.NO_SETTINGS))

    @given(principals, roles, st.sampled_from(acl.OPERATIONS), st.booleans())
    def test_admins_pass_everything(
        self, principal: Principal | None, allowed: list[str], op: str, system: bool
    ) -> None:
        stream = "$x" if system else "x"
        stream_acl = acl.StreamAcl(
            read=tuple(allowed),
            write=tuple(allowed),
            delete=tuple(allowed),
            meta_read=tuple(allowed),
            meta_write=tuple(allowed),
        )
        decision = acl.is_allowed(principal, stream, op, stream_acl, acl.NO_SETTINGS)
        expected = "$all" in allowed or (
            principal is not None and (principal.is_admin or bool(principal.roles & set(allowed)))
        )
        self.assertEqual(decision, expected)
