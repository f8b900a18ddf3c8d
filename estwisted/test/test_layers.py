"""
The package's import rule, checked from the source: imports point
downward only (docs/architecture.md).  Every module of C{estwisted} has a
layer below; a module may import its own layer or lower ones, and the
imports between modules may not form a cycle.  A new module must be given
a layer here, so the rule cannot silently rot.
"""

from __future__ import annotations

import ast
import os

from twisted.trial.unittest import SynchronousTestCase

import estwisted

#: Layer of each module (longest matching prefix wins).
LAYERS: dict[str, int] = {
    # values, errors, seams, generated code
    "estwisted": 0,
    "estwisted.core.model": 0,
    "estwisted.core.errors": 0,
    "estwisted.core.interfaces": 0,
    "estwisted.wire.framing": 0,
    "estwisted.tls.certs": 0,
    "estwisted.tls.checks": 1,
    "estwisted.wire.messages_pb2": 0,
    "estwisted.grpc.protos": 0,
    # pure logic: codecs, rules, state machines, storage
    "estwisted.core.acl": 1,
    "estwisted.core.progress": 1,
    "estwisted.core.metadata": 1,
    "estwisted.wire.atom": 1,
    "estwisted.wire.tcpcodec": 1,
    "estwisted.node.options": 1,
    "estwisted.node.sources": 1,
    "estwisted.node.config": 1,
    "estwisted.cluster.gossip": 1,
    "estwisted.cluster.elections": 1,
    "estwisted.replication.state": 1,
    "estwisted.replication.codec": 1,
    "estwisted.core.writerules": 1,
    "estwisted.cluster.leadership": 1,
    "estwisted.storage": 1,
    "estwisted.grpc.framing": 1,
    "estwisted.grpc.codec": 1,
    # the core over the log
    "estwisted.core.groupcommit": 2,
    "estwisted.core.streams": 2,
    "estwisted.core.users": 2,
    "estwisted.cluster.discovery": 2,
    "estwisted.core.scavenger": 2,
    # subscriptions over the core
    "estwisted.subscriptions.volatile": 3,
    "estwisted.subscriptions.persistent": 3,
    "estwisted.projections": 3,
    # edges: protocols, resources, peers
    "estwisted.tls.handshake": 4,
    "estwisted.tls.loading": 4,
    "estwisted.tls.contexts": 4,
    "estwisted.tcp.server": 4,
    "estwisted.tcp.dispatch": 4,
    "estwisted.http": 4,
    "estwisted.cluster.gossiphttp": 4,
    "estwisted.cluster.controller": 4,
    "estwisted.cluster.wiring": 4,
    "estwisted.replication": 4,
    "estwisted.tcp.internal": 4,
    "estwisted.http.forwarding": 4,
    "estwisted.web.metrics": 4,
    "estwisted.web": 4,
    "estwisted.grpc": 4,
    # wiring and tools
    "estwisted.node.jsonlog": 5,
    "estwisted.client": 5,
    "estwisted.manager": 5,
    "estwisted.node.service": 5,
    "estwisted.node.tap": 5,
    "estwisted.node.cli": 5,
    "estwisted.testing": 5,
}

#: Known violations still to be removed (issue 10); the test fails when
#: one disappears too, so that this list only shrinks.
KNOWN_CYCLES: set[frozenset[str]] = set()


def layer_of(module: str) -> int:
    best = None
    for prefix, layer in LAYERS.items():
        if module == prefix or module.startswith(prefix + "."):
            if best is None or len(prefix) > len(best[0]):
                best = (prefix, layer)
    if best is None:
        raise AssertionError(f"{module} has no layer in estwisted/test/test_layers.py")
    return best[1]


def package_imports() -> dict[str, set[str]]:
    """
    Every module of the package (tests excluded) and the package modules
    it imports at run time, anywhere in its body.
    """
    root = os.path.dirname(estwisted.__file__)
    modules: dict[str, str] = {}
    for directory, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d not in ("test", "__pycache__") and not d.startswith(".")]
        for name in files:
            if name.endswith(".py") and not name.endswith("_pb2.py"):
                path = os.path.join(directory, name)
                relative = os.path.relpath(path, os.path.dirname(root))[:-3]
                module = relative.replace(os.sep, ".")
                if module.endswith(".__init__"):
                    module = module[: -len(".__init__")]
                modules[module] = path
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), path)
        # imports for types only count too: a cycle is a cycle
        deps: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                if node.module.split(".")[0] != "estwisted":
                    continue
                for alias in node.names:
                    candidate = f"{node.module}.{alias.name}"
                    deps.add(candidate if candidate in modules else node.module)
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] == "estwisted":
                        deps.add(alias.name)
        deps.discard(module)
        graph[module] = {d for d in deps if d in modules or d.endswith("_pb2")}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """
    The strongly connected components of more than one module (Tarjan).
    """
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(frozenset(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


class LayerTests(SynchronousTestCase):
    def test_imports_point_downward(self) -> None:
        upward = []
        for module, deps in sorted(package_imports().items()):
            for dep in sorted(deps):
                if layer_of(dep) > layer_of(module):
                    upward.append(f"{module} ({layer_of(module)}) imports {dep} ({layer_of(dep)})")
        self.assertEqual(upward, [])

    def test_no_import_cycles(self) -> None:
        self.assertEqual(set(cycles(package_imports())), KNOWN_CYCLES)

    def test_checker_sees_cycles_and_upward_imports(self) -> None:
        """
        The checker itself: a made-up cycle is found, and an unknown
        module has no layer.
        """
        graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
        self.assertEqual(cycles(graph), [frozenset({"a", "b", "c"})])
        self.assertRaises(AssertionError, layer_of, "elsewhere.module")
