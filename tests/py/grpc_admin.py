"""
grpcio (the gRPC C core) calling the administrative gRPC services of a node
with the estwisted protocol files: python grpc_admin.py HTTP_PORT.

Run in its own process (kurrentdbclient registers the same protobuf names
in the test process).  Basic credentials go in the C{authorization}
metadata, as every EventStoreDB client sends them.  Prints one JSON line
C{{"ok": ..., "checks": [...], "failures": [...]}} and exits 0 only when
every check passed.
"""

from __future__ import annotations

import base64
import json
import sys
import uuid
from typing import Any

import grpc

from estwisted.grpc.protos import (
    monitoring_pb2,
    operations_pb2,
    serverfeatures_pb2,
    shared_pb2,
    users_pb2,
)

checks: list[str] = []
failures: list[dict[str, str]] = []


def check(name: str, condition: bool, detail: object = None) -> None:
    checks.append(name)
    if not condition:
        failures.append({"name": name, "detail": repr(detail)})


def basic(login: str, password: str) -> list[tuple[str, str]]:
    token = base64.b64encode(f"{login}:{password}".encode()).decode()
    return [("authorization", f"Basic {token}")]


ADMIN = basic("admin", "changeit")


def unary(channel: Any, path: str, response: Any) -> Any:
    return channel.unary_unary(path, request_serializer=lambda m: m.SerializeToString(),
                               response_deserializer=response.FromString)


def code_of(call: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        call(*args, **kwargs)
    except grpc.RpcError as e:
        return e.code(), dict(e.trailing_metadata() or ())
    return grpc.StatusCode.OK, {}


def main(port: int) -> None:
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    users = "/event_store.client.users.Users/"
    login = "u" + uuid.uuid4().hex[:8]
    create = unary(channel, users + "Create", users_pb2.CreateResp)
    request = users_pb2.CreateReq()
    request.options.login_name = login
    request.options.password = "secret"
    request.options.full_name = "Test User"
    request.options.groups.extend(["$ops"])
    create(request, metadata=ADMIN, timeout=10)
    check("create user", True)
    code, trailers = code_of(create, request, metadata=ADMIN, timeout=10)
    check("create twice", code == grpc.StatusCode.ALREADY_EXISTS, code)
    details = channel.unary_stream(users + "Details",
                                   request_serializer=lambda m: m.SerializeToString(),
                                   response_deserializer=users_pb2.DetailsResp.FromString)
    one = users_pb2.DetailsReq()
    one.options.login_name = login
    got = [r.user_details for r in details(one, metadata=ADMIN, timeout=10)]
    check("details", [(d.login_name, d.full_name, list(d.groups)) for d in got]
          == [(login, "Test User", ["$ops"])], got)
    everyone = [r.user_details.login_name
                for r in details(users_pb2.DetailsReq(), metadata=ADMIN, timeout=10)]
    check("list users", "admin" in everyone and login in everyone, everyone)
    change = users_pb2.ChangePasswordReq()
    change.options.login_name = login
    change.options.current_password = "secret"
    change.options.new_password = "better"
    unary(channel, users + "ChangePassword", users_pb2.ChangePasswordResp)(
        change, metadata=basic(login, "secret"), timeout=10)
    # the new password authenticates, the old one does not; a user reads
    # its own details but not another's
    def read(request: Any, **kwargs: Any) -> Any:
        return list(details(request, **kwargs))

    code, _ = code_of(read, one, metadata=basic(login, "secret"), timeout=10)
    check("old password refused", code == grpc.StatusCode.UNAUTHENTICATED, code)
    code, _ = code_of(read, one, metadata=basic(login, "better"), timeout=10)
    check("own details with the new password", code == grpc.StatusCode.OK, code)
    admin_details = users_pb2.DetailsReq()
    admin_details.options.login_name = "admin"
    code, trailers = code_of(read, admin_details, metadata=basic(login, "better"), timeout=10)
    check("another user's details refused", code == grpc.StatusCode.PERMISSION_DENIED
          and trailers.get("exception") == "access-denied", (code, trailers))

    ops = "/event_store.client.operations.Operations/"
    start = unary(channel, ops + "StartScavenge", operations_pb2.ScavengeResp)
    started = start(operations_pb2.StartScavengeReq(), metadata=basic(login, "better"),
                    timeout=10)
    check("scavenge by an $ops user", started.scavenge_result in (0, 1), started)
    code, trailers = code_of(start, operations_pb2.StartScavengeReq(), timeout=10)
    check("anonymous scavenge refused", code == grpc.StatusCode.PERMISSION_DENIED
          and trailers.get("exception") == "access-denied", (code, trailers))

    delete = users_pb2.DeleteReq()
    delete.options.login_name = login
    unary(channel, users + "Delete", users_pb2.DeleteResp)(delete, metadata=ADMIN, timeout=10)
    code, trailers = code_of(read, one, metadata=ADMIN, timeout=10)
    check("deleted user", code == grpc.StatusCode.NOT_FOUND
          and trailers.get("exception") == "user-not-found", (code, trailers))

    stats = channel.unary_stream("/event_store.client.monitoring.Monitoring/Stats",
                                 request_serializer=lambda m: m.SerializeToString(),
                                 response_deserializer=monitoring_pb2.StatsResp.FromString)
    call = stats(monitoring_pb2.StatsReq(refresh_time_period_in_ms=100), metadata=ADMIN,
                 timeout=10)
    first = next(call)
    second = next(call)
    call.cancel()
    check("stats stream", "proc-id" in first.stats and "proc-id" in second.stats, first)

    features = unary(channel, "/event_store.client.server_features.ServerFeatures/"
                     "GetSupportedMethods", serverfeatures_pb2.SupportedMethods)(
        shared_pb2.Empty(), timeout=10)
    listed = {(m.service_name, m.method_name) for m in features.methods}
    check("features list users and streams",
          ("event_store.client.users.users", "create") in listed
          and ("event_store.client.streams.streams", "batchappend") in listed, listed)
    channel.close()
    compression(port)


def compression(port: int) -> None:
    """
    A channel compressing with gzip (grpc-encoding: gzip on every request,
    messages flagged compressed): appends are taken and a read of large
    events comes back (grpcio inflates what the node compressed).
    """
    from estwisted.grpc.protos import streams_pb2

    channel = grpc.insecure_channel(f"127.0.0.1:{port}", compression=grpc.Compression.Gzip)
    stream = f"gzip-{uuid.uuid4().hex}"
    append = channel.stream_unary(
        "/event_store.client.streams.Streams/Append",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=streams_pb2.AppendResp.FromString)
    options = streams_pb2.AppendReq()
    options.options.stream_identifier.stream_name = stream.encode()
    options.options.no_stream.SetInParent()
    requests = [options]
    for n in range(5):
        event = streams_pb2.AppendReq()
        event.proposed_message.id.string = str(uuid.uuid4())
        event.proposed_message.metadata["type"] = "Big"
        event.proposed_message.metadata["content-type"] = "application/json"
        event.proposed_message.data = json.dumps({"n": n, "pad": "x" * 2000}).encode()
        requests.append(event)
    response = append(iter(requests), metadata=ADMIN, timeout=10)
    check("gzip append", response.WhichOneof("result") == "success"
          and response.success.current_revision == 4, response)
    read = channel.unary_stream(
        "/event_store.client.streams.Streams/Read",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=streams_pb2.ReadResp.FromString)
    request = streams_pb2.ReadReq()
    o = request.options
    o.stream.stream_identifier.stream_name = stream.encode()
    o.stream.start.SetInParent()
    o.count = 100
    o.no_filter.SetInParent()
    o.uuid_option.string.SetInParent()
    call = read(request, metadata=ADMIN, timeout=10)
    got = [json.loads(r.event.event.data)["n"] for r in call
           if r.WhichOneof("content") == "event"]
    # (grpcio hides grpc-encoding from the metadata; the node's unit tests
    # check that these responses are compressed.)
    check("gzip read", got == list(range(5)), got)
    channel.close()


if __name__ == "__main__":
    try:
        main(int(sys.argv[1]))
    except Exception as e:  # report, never hang
        failures.append({"name": "exception", "detail": repr(e)})
    print(json.dumps({"ok": not failures, "checks": checks, "failures": failures}))
    sys.exit(0 if not failures else 1)
