"""
Tests for L{estwisted.core.users}.
"""

from __future__ import annotations

import json

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from estwisted.core.errors import AccessDenied, AlreadyExists, NotAuthenticated, NotFound
from estwisted.core.model import Principal, ReadStatus
from estwisted.core.streams import StreamStore
from estwisted.core.test.test_streams import rebuild_index
from estwisted.core.users import UserManager, UserRecord, hash_password, verify_password
from estwisted.storage.index import StreamIndex
from estwisted.storage.memory import MemoryLog

ADMIN = Principal("admin", frozenset({"$admins"}))
ALICE = Principal("alice", frozenset({"devs"}))


class PasswordTests(SynchronousTestCase):
    def test_verify(self) -> None:
        salt = b"s" * 16
        record = UserRecord("a", "", (), False, salt.hex(), hash_password("pw", salt, 5).hex(), 5)
        self.assertTrue(verify_password(record, "pw"))
        self.assertFalse(verify_password(record, "pW"))
        broken = UserRecord("a", "", (), False, "zz", "zz", 5)
        self.assertFalse(verify_password(broken, "pw"))


class UserManagerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.log = MemoryLog()
        self.store = StreamStore(self.log, StreamIndex(), self.clock)
        self.users = UserManager(self.store, iterations=10)
        self.settle(self.users.ensure_default_users())

    def settle(self, d):  # type: ignore[no-untyped-def]
        self.clock.advance(0)
        return self.successResultOf(d)

    def fails(self, d, error):  # type: ignore[no-untyped-def]
        self.clock.advance(0)
        return self.failureResultOf(d, error)

    def restart(self) -> None:
        self.store = StreamStore(self.log, rebuild_index(self.log), self.clock)
        self.users = UserManager(self.store, iterations=10)

    def test_defaults(self) -> None:
        admin = self.users.get_user("admin", ADMIN)
        self.assertEqual(
            (admin.full_name, admin.groups, admin.disabled),
            ("Event Store Administrator", ("$admins",), False),
        )
        self.assertEqual(self.users.get_user("ops", ADMIN).groups, ("$ops",))
        self.assertEqual([u.login for u in self.users.list_users(ADMIN)], ["admin", "ops"])

    def test_defaults_not_recreated(self) -> None:
        """
        A second start does not write the default users again, and a
        deleted default user stays deleted.
        """
        before = self.log.end_position
        self.settle(self.users.ensure_default_users())
        self.assertEqual(self.log.end_position, before)
        self.settle(self.users.delete_user("ops", ADMIN))
        self.restart()
        self.settle(self.users.ensure_default_users())
        self.assertRaises(NotFound, self.users.get_user, "ops", ADMIN)

    def test_password_stored_hashed(self) -> None:
        result = self.store.read_event("$user-admin", -1, False, ADMIN)
        assert result.event is not None
        body = json.loads(result.event.original.data)
        self.assertNotIn(b"changeit", result.event.original.data)
        self.assertEqual(len(bytes.fromhex(body["salt"])), 16)
        other = self.store.read_event("$user-ops", -1, False, ADMIN)
        assert other.event is not None
        self.assertNotEqual(body["salt"], json.loads(other.event.original.data)["salt"])

    def test_writes_seen_by_another_manager(self) -> None:
        """
        A manager caches verified credentials but watches the store: a
        password reset written through another manager over the same store
        (or replicated into it) is seen by the next authentication.
        """
        other = UserManager(self.store, iterations=10)
        self.assertEqual(other.authenticate("ops", "changeit").login, "ops")
        self.settle(self.users.reset_password("ops", "fresh", ADMIN))
        self.assertRaises(NotAuthenticated, other.authenticate, "ops", "changeit")
        self.assertEqual(other.authenticate("ops", "fresh").login, "ops")

    def test_create_and_authenticate(self) -> None:
        self.settle(self.users.create_user("alice", "Alice", ["devs"], "pw", ADMIN))
        self.assertEqual(self.users.authenticate("alice", "pw"), ALICE)
        self.assertRaises(NotAuthenticated, self.users.authenticate, "alice", "nope")
        self.fails(self.users.create_user("alice", "A", [], "x", ADMIN), AlreadyExists)
        self.restart()
        self.assertEqual(self.users.authenticate("alice", "pw"), ALICE)
        self.assertEqual([u.login for u in self.users.list_users(ADMIN)], ["admin", "ops", "alice"])

    def test_concurrent_create(self) -> None:
        d1 = self.users.create_user("bob", "B", [], "x", ADMIN)
        d2 = self.users.create_user("bob", "B", [], "y", ADMIN)
        self.clock.advance(0)
        self.successResultOf(d1)
        self.failureResultOf(d2, AlreadyExists)

    def test_requires_admin(self) -> None:
        for principal in (None, ALICE):
            self.fails(self.users.create_user("x", "", [], "pw", principal), AccessDenied)
            self.fails(self.users.update_user("ops", "", [], principal), AccessDenied)
            self.fails(self.users.delete_user("ops", principal), AccessDenied)
            self.fails(self.users.disable_user("ops", principal), AccessDenied)
            self.fails(self.users.enable_user("ops", principal), AccessDenied)
            self.fails(self.users.reset_password("ops", "x", principal), AccessDenied)
            self.assertRaises(AccessDenied, self.users.list_users, principal)
            self.assertRaises(AccessDenied, self.users.get_user, "ops", principal)

    def test_get_self(self) -> None:
        self.settle(self.users.create_user("alice", "Alice", ["devs"], "pw", ADMIN))
        record = self.users.get_user("alice", ALICE)
        self.assertEqual(record.public_json()["loginName"], "alice")
        self.assertNotIn("hash", record.public_json())
        self.assertTrue(record.public_json()["dateLastUpdated"].endswith("Z"))

    def test_not_found(self) -> None:
        self.fails(self.users.update_user("ghost", "", [], ADMIN), NotFound)
        self.fails(self.users.delete_user("ghost", ADMIN), NotFound)
        self.fails(self.users.enable_user("ghost", ADMIN), NotFound)
        self.fails(self.users.reset_password("ghost", "x", ADMIN), NotFound)
        self.assertRaises(NotFound, self.users.get_user, "ghost", ADMIN)

    def test_update(self) -> None:
        self.assertEqual(self.users.authenticate("ops", "changeit").groups, frozenset({"$ops"}))
        self.settle(self.users.update_user("ops", "Ops!", ["$ops", "x"], ADMIN))
        self.assertEqual(self.users.get_user("ops", ADMIN).full_name, "Ops!")
        self.assertEqual(
            self.users.authenticate("ops", "changeit").groups, frozenset({"$ops", "x"})
        )

    def test_disable_enable(self) -> None:
        self.users.authenticate("ops", "changeit")
        self.settle(self.users.disable_user("ops", ADMIN))
        self.assertRaises(NotAuthenticated, self.users.authenticate, "ops", "changeit")
        self.settle(self.users.enable_user("ops", ADMIN))
        self.users.authenticate("ops", "changeit")

    def test_change_password(self) -> None:
        ops = Principal("ops", frozenset({"$ops"}))
        self.fails(self.users.change_password("ops", "wrong", "new", ops), NotAuthenticated)
        self.fails(self.users.change_password("ghost", "changeit", "new", ops), NotFound)
        self.settle(self.users.change_password("ops", "changeit", "new", ops))
        self.assertRaises(NotAuthenticated, self.users.authenticate, "ops", "changeit")
        self.assertEqual(self.users.authenticate("ops", "new"), ops)
        self.clock.advance(0)
        page = self.store.read_stream("$users-password-notifications", 0, 10, True, False, ADMIN)
        self.assertEqual(page.status, ReadStatus.SUCCESS)
        self.assertEqual(json.loads(page.events[0].original.data), {"loginName": "ops"})

    def test_reset_password(self) -> None:
        self.settle(self.users.reset_password("ops", "fresh", ADMIN))
        self.assertEqual(self.users.authenticate("ops", "fresh").login, "ops")
        self.assertRaises(NotAuthenticated, self.users.authenticate, "ops", "changeit")

    def test_delete_and_recreate(self) -> None:
        self.settle(self.users.delete_user("ops", ADMIN))
        self.assertRaises(NotAuthenticated, self.users.authenticate, "ops", "changeit")
        self.assertEqual([u.login for u in self.users.list_users(ADMIN)], ["admin"])
        self.settle(self.users.create_user("ops", "New ops", ["$ops"], "pw2", ADMIN))
        self.assertEqual(self.users.authenticate("ops", "pw2").login, "ops")
        self.assertEqual(self.users.get_user("ops", ADMIN).full_name, "New ops")

    def test_direct_stream_write_invalidates(self) -> None:
        """
        A write to C{$user-<login>} by other means also refreshes the cached
        credentials.
        """
        self.users.authenticate("ops", "changeit")
        self.settle(self.store.delete_stream("$user-ops", -2, False, ADMIN))
        self.assertRaises(NotAuthenticated, self.users.authenticate, "ops", "changeit")

    def test_auth_cache(self) -> None:
        """
        A repeated authentication does not recompute the hash.
        """
        import estwisted.core.users as users_module

        self.users.authenticate("admin", "changeit")
        calls = []
        real = users_module.hash_password

        def counting(*args):  # type: ignore[no-untyped-def]
            calls.append(args)
            return real(*args)

        self.patch(users_module, "hash_password", counting)
        for _ in range(5):
            self.users.authenticate("admin", "changeit")
        self.assertEqual(calls, [])
        self.assertRaises(NotAuthenticated, self.users.authenticate, "admin", "bad")
        self.assertEqual(len(calls), 1)
