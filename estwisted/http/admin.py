# -*- test-case-name: estwisted.http.test.test_api -*-
"""
Operational routes (http-api.md 10-11): C{/ping}, C{/info}, C{/stats},
C{/gossip}, C{/admin/*} (shutdown, certificates, scavenge, merge indexes).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from typing import Any, Union

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from estwisted.http.base import HttpBase
from estwisted.http.parsing import (
    ES_VERSION,
    GOSSIP_TYPES,
    JSON_ONLY,
    NO_CACHE,
    SIMPLE_TYPES,
    HttpError,
    iso_now,
    set_header,
)
from estwisted.wire import atom


async def maybe_await(hook: Callable[[], Any]) -> Any:
    result = hook()
    if isinstance(result, Deferred):
        return await result
    return result




class AdminRoutes(HttpBase):
    """
    The operational handlers.
    """

    # -- operational -------------------------------------------------------------------

    def ping(self, request: Any) -> bytes:
        media, _, _ = self._negotiate(request, SIMPLE_TYPES)
        self._principal(request, "none")
        text = "Ping request successfully handled"
        if media == atom.TEXT_PLAIN:
            return self._ok(request, text.encode(), media)
        if media in atom.XML_TYPES:
            return self._ok(request, atom.xml_document(atom.json_to_xml("text", text)), media)
        return self._ok(request, atom.dumps({"text": text}), media)

    def info(self, request: Any) -> bytes:
        media, _, _ = self._negotiate(request, SIMPLE_TYPES)
        self._principal(request, "none")
        body = {
            "esVersion": ES_VERSION,
            "state": self._state().lower(),
            "projectionsMode": self.node_info.projections_mode,
        }
        if media in atom.XML_TYPES:
            return self._ok(request, atom.xml_document(atom.json_to_xml("info", body)), media)
        return self._ok(request, atom.dumps(body), atom.JSON if media == atom.TEXT_PLAIN
                        else media)

    def stats(self, request: Any, path: str = "") -> bytes:
        self._negotiate(request, SIMPLE_TYPES)
        self._principal(request, "none")
        now = self.clock.seconds()
        try:
            load = list(os.getloadavg())
        except OSError:
            load = []
        tree: dict[str, Any] = {
            "proc": {
                "startTime": iso_now(self._started),
                "id": os.getpid(),
                "uptimeSeconds": max(0.0, now - self._started),
                "threadsCount": 1,
            },
            "sys": {"loadavg": load},
            "es": {
                "checksum": self.store.last_commit_position,
                "checksumNonFlushed": self.store.last_commit_position,
                "httpLongPollWaiters": sum(len(v) for v in self._waiters.by_stream.values()),
            },
        }
        node: Any = tree
        for part in [p for p in path.split("/") if p]:
            if not isinstance(node, dict) or part not in node:
                raise HttpError(404, "Not Found")
            node = node[part]
        set_header(request, b"cache-control", self._cache_control(b"max-age=1, public"))
        return self._ok(request, atom.dumps(node), atom.JSON)

    def gossip_document(self) -> dict[str, Any]:
        """
        The single-node cluster view (http-api.md 11.1).
        """
        info = self.node_info
        position = self.store.last_commit_position
        member = {
            "instanceId": info.instance_id,
            "timeStamp": iso_now(self.clock.seconds()),
            "state": info.state,
            "isAlive": True,
            "internalTcpIp": info.int_ip,
            "internalTcpPort": info.int_tcp_port,
            "internalSecureTcpPort": info.int_secure_tcp_port,
            "externalTcpIp": info.ext_ip,
            "externalTcpPort": info.ext_tcp_port,
            "externalSecureTcpPort": info.ext_secure_tcp_port,
            "internalHttpIp": info.int_ip,
            "internalHttpPort": info.int_http_port,
            "externalHttpIp": info.ext_ip,
            "externalHttpPort": info.ext_http_port,
            "lastCommitPosition": position,
            "writerCheckpoint": position,
            "chaserCheckpoint": position,
            "epochPosition": 0,
            "epochNumber": 0,
            "epochId": str(uuid.UUID(int=0)),
            "nodePriority": info.node_priority,
        }
        return {"members": [member], "serverIp": info.int_ip, "serverPort": info.int_http_port}

    def gossip(self, request: Any) -> bytes:
        media, _, _ = self._negotiate(request, GOSSIP_TYPES)
        self._principal(request, "none")
        view = self.node_info.gossip_view
        doc = view() if view is not None else self.gossip_document()
        set_header(request, b"cache-control", NO_CACHE)
        if media in atom.XML_TYPES:
            members = "".join(atom.json_to_xml("MemberInfoDto", m) for m in doc["members"])
            xml = (
                f"<ClusterInfoDto><members>{members}</members>"
                f"<serverIp>{doc['serverIp']}</serverIp>"
                f"<serverPort>{doc['serverPort']}</serverPort></ClusterInfoDto>"
            )
            return self._ok(request, atom.xml_document(xml), media)
        return self._ok(request, atom.dumps(doc), atom.JSON)

    def shutdown(self, request: Any) -> bytes:
        self._principal(request, "ops")
        hook = self.node_info.shutdown
        if hook is not None:
            self.clock.callLater(0, hook)
        request.setResponseCode(200, b"OK")
        return b""

    def reload_certificates(self, request: Any) -> bytes:
        """
        C{POST /admin/reloadcertificates} (ops): read the node's certificate
        files again, as SIGHUP does.  200 with the outcome's message when the
        new files are in use; 400 with the reason when they are broken (the
        node keeps its previous certificate) or when the node has no TLS.
        """
        self._principal(request, "ops")
        hook = self.node_info.reload_certificates
        if hook is None:
            message = "TLS is not configured on this node"
            raise HttpError(400, message, body=message.encode(), content_type=atom.TEXT_PLAIN)
        outcome = hook()
        body = str(outcome.message).encode("utf-8")
        if not outcome.ok:
            raise HttpError(
                400, "Certificate reload failed", body=body, content_type=atom.TEXT_PLAIN
            )
        return self._ok(request, body, atom.TEXT_PLAIN)

    def scavenge(self, request: Any) -> Union[bytes, Deferred[bytes]]:
        self._principal(request, "ops")
        for name in (b"startFromChunk", b"threads"):
            value = self._query(request, name)
            if value is not None:
                minimum = 0 if name == b"startFromChunk" else 1
                if not (value.isdigit() and value.isascii()) or int(value) < minimum:
                    raise HttpError(400, f"Invalid {name.decode()} parameter.")
        scavenger = self.store.scavenger() if self.node_info.scavenge is None else None
        if scavenger is not None:
            from estwisted.core.scavenger import ScavengeInProgress

            first = self._query(request, b"startFromChunk")
            try:
                scavenge_id, _ = scavenger.start(int(first) if first else 0)
            except ScavengeInProgress as e:
                raise HttpError(400, "Scavenge already running.") from e
            self._scavenges[scavenge_id] = scavenger
            return self._ok(request, atom.dumps({"scavengeId": scavenge_id}), atom.JSON)
        if any(v is not None for v in self._scavenges.values()):
            raise HttpError(400, "Scavenge already running.")
        scavenge_id = str(uuid.uuid4())
        hook = self.node_info.scavenge
        if hook is not None:
            self._scavenges[scavenge_id] = True
            d: Deferred[Any] = Deferred.fromCoroutine(maybe_await(hook))

            def finished(result: Any) -> None:
                self._scavenges[scavenge_id] = None
                if isinstance(result, Failure):
                    self._log.failure("Scavenge failed", result)

            d.addBoth(finished)
        else:
            self._scavenges[scavenge_id] = None
        return self._ok(request, atom.dumps({"scavengeId": scavenge_id}), atom.JSON)

    def merge_indexes(self, request: Any) -> bytes:
        """
        C{POST /admin/mergeindexes}: the index needs no merging here; the
        reply has the shape clients expect.
        """
        self._principal(request, "ops")
        return self._ok(request, atom.dumps({"mergeIndexesId": str(uuid.uuid4())}), atom.JSON)

    def info_options(self, request: Any) -> bytes:
        """
        C{GET /info/options}: the node's effective options (passwords
        blanked).
        """
        self._negotiate(request, JSON_ONLY)
        self._principal(request, "ops")
        body = [
            {
                "name": name,
                "description": "",
                "group": "",
                "value": "" if "password" in name.lower() else value,
                "possibleValues": None,
            }
            for name, value in self.node_info.options
        ]
        return self._ok(request, atom.dumps(body), atom.JSON)

    def stop_scavenge(self, request: Any, scavenge_id: str) -> bytes:
        self._principal(request, "ops")
        if scavenge_id not in self._scavenges:
            raise HttpError(404, "Not Found")
        running = self._scavenges[scavenge_id]
        if running is not None and hasattr(running, "stop"):
            running.stop(scavenge_id)
        return self._ok(request, atom.dumps(scavenge_id), atom.JSON)

