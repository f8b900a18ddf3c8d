# -*- test-case-name: estwisted.http.test.test_v5_options -*-
"""
Tests for the Event Store v5 HTTP options: C{EnableTrustedAuth}
(L{estwisted.http.base.trusted_principal}), C{DisableHttpCaching} and
C{ExtHttpPrefixes}/C{IntHttpPrefixes} (L{estwisted.http.prefixes}), through
the API resource with C{StubTreq} and as pure functions.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from treq.testing import StubTreq
from twisted.trial.unittest import SynchronousTestCase

from estwisted.core.model import Principal
from estwisted.http.base import trusted_principal
from estwisted.http.info import NodeInfo
from estwisted.http.parsing import NO_CACHE
from estwisted.http.prefixes import (
    BAD_HOST,
    NO_PATH,
    PrefixedResource,
    interface_prefixes,
    match_prefix,
    prefixes_for,
    request_host,
)
from estwisted.http.test.test_api import ADMIN, ApiTestMixin, make_node
from estwisted.node.config import ConfigError, load_config
from estwisted.node.options import HttpPrefix, parse_http_prefix


class TrustedPrincipalTests(SynchronousTestCase):
    """
    The C{ES-TrustedAuth} header format (v5 TrustedHttpAuthenticationProvider).
    """

    def test_user_and_groups(self) -> None:
        self.assertEqual(
            trusted_principal("root; $admins, other"),
            Principal("root", frozenset({"$admins", "other"})),
        )

    def test_user_only(self) -> None:
        self.assertEqual(trusted_principal(" bob "), Principal("bob", frozenset()))

    def test_malformed(self) -> None:
        """
        More than one C{;} or no user name: refused (C{None}).
        """
        self.assertIsNone(trusted_principal("a; b; c"))
        self.assertIsNone(trusted_principal(" ; $admins"))

    @given(
        st.text(st.characters(blacklist_characters=";,"), min_size=1).filter(str.strip),
        st.lists(st.text(st.characters(blacklist_characters=";,")).filter(str.strip)),
    )
    def test_round_trip(self, login: str, groups: list[str]) -> None:
        header = login + ("; " + ", ".join(groups) if groups else "")
        principal = trusted_principal(header)
        assert principal is not None
        self.assertEqual(principal.login, login.strip())
        self.assertEqual(principal.groups, frozenset(g.strip() for g in groups))


class TrustedAuthApiTests(ApiTestMixin, SynchronousTestCase):
    """
    C{ES-TrustedAuth} through the API.
    """

    def use(self, enabled: bool) -> None:
        self.store, self.persistent, self.api = make_node(
            self.clock, NodeInfo(enable_trusted_auth=enabled)
        )
        self.stub = StubTreq(self.api.resource())

    def test_honoured_when_enabled(self) -> None:
        """
        An admin named by the header may read C{$users} (an admin-only
        stream); a plain user named by it may not.
        """
        self.use(True)
        reply = self.request(
            "GET", "/streams/$users", {"ES-TrustedAuth": "proxied; $admins",
                                      "Accept": "application/json"}
        )
        self.assertEqual(reply.code, 200)
        reply = self.request(
            "GET", "/streams/$users", {"ES-TrustedAuth": "proxied",
                                      "Accept": "application/json"}
        )
        self.assertEqual(reply.code, 401)

    def test_ignored_when_disabled(self) -> None:
        self.use(False)
        reply = self.request(
            "GET", "/streams/$users", {"ES-TrustedAuth": "proxied; $admins",
                                      "Accept": "application/json"}
        )
        self.assertEqual(reply.code, 401)

    def test_malformed_is_401(self) -> None:
        self.use(True)
        reply = self.request("GET", "/streams/x", {"ES-TrustedAuth": "a;b;c"})
        self.assertEqual(reply.code, 401)

    def test_basic_wins(self) -> None:
        """
        Basic credentials are checked first (as v5): wrong ones are 401
        whatever the trusted header says.
        """
        self.use(True)
        reply = self.request(
            "GET", "/streams/$users",
            {"ES-TrustedAuth": "proxied; $admins", "Authorization": "Basic eDp5"},
        )
        self.assertEqual(reply.code, 401)


class DisableHttpCachingTests(ApiTestMixin, SynchronousTestCase):
    """
    With C{DisableHttpCaching} no response is cacheable.
    """

    def use(self, disabled: bool) -> None:
        self.store, self.persistent, self.api = make_node(
            self.clock, NodeInfo(disable_http_caching=disabled)
        )
        self.stub = StubTreq(self.api.resource())

    def cache_controls(self) -> list[Any]:
        for i in range(25):
            self.write("s", {"n": i})
        return [
            self.get("/streams/s/0/forward/20").header("Cache-Control"),  # full page
            self.get("/streams/s/0").header("Cache-Control"),  # one event
            self.get("/streams/s").header("Cache-Control"),  # head
            self.get("/stats").header("Cache-Control"),
        ]

    def test_default_caches(self) -> None:
        self.use(False)
        controls = self.cache_controls()
        self.assertTrue(controls[0].startswith("max-age=31536000"), controls)
        self.assertTrue(controls[1].startswith("max-age=31536000"), controls)
        self.assertEqual(controls[2], NO_CACHE.decode())
        self.assertEqual(controls[3], "max-age=1, public")

    def test_disabled(self) -> None:
        self.use(True)
        self.assertEqual(set(self.cache_controls()), {NO_CACHE.decode()})

    def test_metadata_cache_control_ignored(self) -> None:
        """
        A stream's C{$cacheControl} gives its head a max-age, except when
        caching is disabled.
        """
        for disabled, expected in ((False, "max-age=30, private"), (True, NO_CACHE.decode())):
            self.use(disabled)
            self.write("c", {"n": 0})
            body = json.dumps({"$cacheControl": 30, "$acl": {"$r": "$admins"}}).encode()
            headers = {**ADMIN, "Content-Type": "application/json",
                       "ES-EventId": "6c6d2b6c-5b2f-4a5c-9d0a-3b1a9f1c2d3e"}
            self.assertEqual(self.request("POST", "/streams/c/metadata", headers, body).code, 201)
            self.assertEqual(self.get("/streams/c").header("Cache-Control"), expected)


class HttpPrefixParseTests(SynchronousTestCase):
    def test_forms(self) -> None:
        self.assertEqual(parse_http_prefix("http://*:2113/"), HttpPrefix("http", None, 2113, "/"))
        self.assertEqual(parse_http_prefix("http://+:2113/"), HttpPrefix("http", None, 2113, "/"))
        self.assertEqual(
            parse_http_prefix("HTTPS://Node1.Example:2113/es/"),
            HttpPrefix("https", "node1.example", 2113, "/es/"),
        )
        self.assertEqual(
            parse_http_prefix("http://[::1]:2113/"), HttpPrefix("http", "::1", 2113, "/")
        )
        self.assertEqual(parse_http_prefix("http://h/").port, 80)

    def test_bad(self) -> None:
        for text in ("ftp://h:1/", "http://h:1", "http://h:1/es", "http://:1/", "http://h:0/",
                     "http://h:x/", "h:2113/", "http://h:1/a//b/"):
            self.assertRaises(ValueError, parse_http_prefix, text)

    @given(
        st.sampled_from(["http", "https"]),
        st.one_of(st.none(), st.from_regex(r"[a-z][a-z0-9.-]{0,20}", fullmatch=True)),
        st.integers(1, 65535),
        st.lists(st.from_regex(r"[a-z0-9]{1,8}", fullmatch=True), max_size=3),
    )
    def test_round_trip(self, scheme: str, host: Any, port: int, parts: list[str]) -> None:
        path = "/" + "".join(p + "/" for p in parts)
        prefix = HttpPrefix(scheme, host, port, path)
        self.assertEqual(parse_http_prefix(str(prefix)), prefix)

    def test_config(self) -> None:
        """
        The options are checked when the configuration loads: a bad prefix
        and a prefix on another port are refused, naming the option.
        """
        config = load_config({"ext-http-prefixes": "http://*:2113/,http://es.example:2113/es/"})
        self.assertEqual(len(config.ext_http_prefixes), 2)
        e = self.assertRaises(ConfigError, load_config, {"ext-http-prefixes": "http://x:2113"})
        self.assertIn("ExtHttpPrefixes", str(e))
        e = self.assertRaises(ConfigError, load_config, {"int-http-prefixes": "http://*:9999/"})
        self.assertIn("IntHttpPrefixes", str(e))
        self.assertIn("port 9999", str(e))


class MatchPrefixTests(SynchronousTestCase):
    prefixes = [
        parse_http_prefix("http://es.example:2113/"),
        parse_http_prefix("http://*:2113/es/"),
        *interface_prefixes("127.0.0.1", 2113),
    ]

    def test_hosts(self) -> None:
        for host in ("es.example", "127.0.0.1", "localhost"):
            found = match_prefix(self.prefixes, False, host, 2113, b"/streams/a")
            self.assertIsInstance(found, HttpPrefix, host)
        self.assertEqual(match_prefix(self.prefixes, False, "other", 2113, b"/x"), NO_PATH)
        narrow = [parse_http_prefix("http://es.example:2113/")]
        self.assertEqual(match_prefix(narrow, False, "other", 2113, b"/x"), BAD_HOST)
        self.assertEqual(match_prefix(narrow, False, None, 2113, b"/x"), BAD_HOST)

    def test_longest_path(self) -> None:
        found = match_prefix(self.prefixes, False, "other", 2113, b"/es/streams/a")
        self.assertEqual(found, parse_http_prefix("http://*:2113/es/"))
        found = match_prefix(self.prefixes, False, "other", 2113, b"/es")
        self.assertEqual(found, parse_http_prefix("http://*:2113/es/"))
        found = match_prefix(self.prefixes, False, "es.example", 2113, b"/esx")
        self.assertEqual(found, parse_http_prefix("http://es.example:2113/"))

    def test_scheme_and_port(self) -> None:
        tls_only = [parse_http_prefix("https://*:2113/")]
        self.assertEqual(match_prefix(tls_only, False, "h", 2113, b"/"), BAD_HOST)
        self.assertIsInstance(match_prefix(tls_only, True, "h", 2113, b"/"), HttpPrefix)
        self.assertEqual(match_prefix(tls_only, True, "h", 2114, b"/"), BAD_HOST)

    def test_request_host(self) -> None:
        self.assertEqual(request_host("Example.COM:2113"), "example.com")
        self.assertEqual(request_host("[::1]:2113"), "::1")
        self.assertEqual(request_host("example.com"), "example.com")
        self.assertIsNone(request_host(""))
        self.assertIsNone(request_host(None))

    def test_interface_prefixes(self) -> None:
        hosts = {p.host for p in interface_prefixes("0.0.0.0", 1)}
        self.assertEqual(hosts, {None})
        hosts = {p.host for p in interface_prefixes("10.1.2.3", 1)}
        self.assertEqual(hosts, {"10.1.2.3"})
        self.assertEqual(prefixes_for((), "127.0.0.1", 1), [])


class PrefixedResourceTests(ApiTestMixin, SynchronousTestCase):
    """
    The API behind L{PrefixedResource}.
    """

    def setUp(self) -> None:
        super().setUp()
        port = 2113  # StubTreq: the URL's port (BASE)
        prefixes = [
            HttpPrefix("http", "es.example", port, "/"),
            HttpPrefix("http", None, port, "/es/"),
            *interface_prefixes("127.0.0.1", port),
        ]
        self.stub = StubTreq(PrefixedResource(self.api.resource(), prefixes))

    def test_host_refused(self) -> None:
        """
        A host only the C{/es/} prefix names gets 404 outside it.
        """
        reply = self.request("GET", "/streams/s", {**ADMIN, "Host": "other.example"})
        self.assertEqual((reply.code, reply.phrase), (404, b"Not Found"))

    def test_named_host(self) -> None:
        self.write("s", {"n": 1})
        reply = self.request("GET", "/streams/s", {**ADMIN, "Host": "es.example",
                                                  "Accept": "application/json"})
        self.assertEqual(reply.code, 200)

    def test_path_prefix(self) -> None:
        """
        Below C{/es/} the API is served with C{/es} stripped, and the URLs
        in the feed carry it.
        """
        self.write("s", {"n": 1})
        reply = self.request("GET", "/es/streams/s", {**ADMIN, "Host": "any.example",
                                                     "Accept": "application/json"})
        self.assertEqual(reply.code, 200)
        feed = reply.json()
        self.assertEqual(feed["id"], "http://any.example/es/streams/s")


class EndSentinelTests(ApiTestMixin, SynchronousTestCase):
    """
    The end of C{$all} over HTTP is C{head}, backwards only; a negative
    position (C{ffff...}, TCP's C{Position.End}) is refused as v5 refuses it.
    """

    def test_negative_position_refused(self) -> None:
        self.write("s", {"n": 0})
        for direction in ("backward", "forward"):
            reply = self.get(f"/streams/$all/{'f' * 32}/{direction}/1")
            self.assertEqual(
                (reply.code, reply.phrase), (400, b"Invalid position argument: " + b"f" * 32)
            )
        reply = self.get(f"/streams/$all/{'0' * 16}{'f' * 16}/forward/1")
        self.assertEqual(reply.code, 400)
        self.assertEqual(self.get("/streams/$all/head/backward/1").json()["entries"][0]["title"],
                         "0@s")
        self.assertEqual(self.get("/streams/$all/head/forward/1").code, 400)
