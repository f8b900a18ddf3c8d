"""
The external HTTP API (http-api.md), by resource:

  - L{estwisted.http.parsing}: content negotiation, request parsing, the
    error-to-status map, reply sizing;
  - L{estwisted.http.info}: what the API tells about the node
    (L{estwisted.http.info.NodeInfo});
  - L{estwisted.http.base}: the request pipeline the resources share;
  - L{estwisted.http.streams}, L{estwisted.http.subscriptions},
    L{estwisted.http.users}, L{estwisted.http.admin},
    L{estwisted.http.projections}: the resources;
  - L{estwisted.http.api}: the one route table and L{estwisted.http.api.HttpApi};
  - L{estwisted.http.site}: the C{Site} and its body-limited requests.
"""
