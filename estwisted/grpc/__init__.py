"""
The EventStoreDB 20+ gRPC client API, served on the HTTP port beside the v5
HTTP/1.1 API (docs/grpc.md).

  - L{estwisted.grpc.framing}: gRPC message framing, timeouts, statuses and
    trailers (pure).
  - L{estwisted.grpc.codec}: protobuf messages to and from the store's
    values, errors to C{exception} trailers (pure).
  - L{estwisted.grpc.services}: the services over the store, the
    subscription hub and the persistent subscriptions.
  - L{estwisted.grpc.protocol}: HTTP/2 (the sans-IO C{h2} state machine)
    under a Twisted protocol, and the first-bytes sniffer that shares the
    HTTP port with the HTTP/1.1 site.
  - L{estwisted.grpc.protos}: the C{.proto} files and their generated
    modules.
"""
