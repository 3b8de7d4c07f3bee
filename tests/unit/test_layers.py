"""The package layers of ``cortex_rm``: every import runs down (or sideways), never up, and no packages form a cycle.

Bottom to top (README "Layout", DESIGN.md "Layers"):

    vocabulary    yarn/                      YARN's ids, resources, exit statuses, tokens, addresses...
    cores         dht/ allocator/ container/ accounting/ fs/ events/ ha/
    wire          yarn_api/ internal/        Hadoop IPC, protobuf, REST; Thrift, TLS, identity
    configuration config/                    the TOML file's sections, one per role
    roles         roles/                     ResourceManager, NodeManager, ring member
    entry points  node.py cli.py local_cluster.py local_cluster_config.py local_cluster_reap.py client_config.py
                  spark_archive.py
                  webhdfs_client.py image_push.py isolation.py processes.py ring_status.py cluster_wait.py __main__.py
                  client.py client_errors.py client_http.py introducer_cache.py event_cli.py (the events client)
                  rm_lookup.py rm_verification.py (client-config: the RMs found through any node, each verified)
                  contributor.py contributor_files.py (contributor install/uninstall: config, systemd unit)

A module may import from its own layer or any layer below.  Within a layer,
packages may import each other only one way (no cycle between packages).
Imports are read with ``ast`` from the source, function-level ones included.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import cortex_rm

ROOT = Path(cortex_rm.__file__).parent

LAYERS: Sequence[tuple[str, frozenset[str]]] = (
    ("vocabulary", frozenset({"", "yarn"})),  # "": cortex_rm/__init__.py (the version)
    ("cores", frozenset({"dht", "allocator", "container", "accounting", "fs", "events", "ha"})),
    ("wire", frozenset({"yarn_api", "internal", "status_page"})),
    ("configuration", frozenset({"config"})),
    ("roles", frozenset({"roles"})),
    (
        "entry points",
        frozenset(
            {
                "node", "cli", "local_cluster", "local_cluster_config", "local_cluster_reap", "client_config",
                "spark_archive", "webhdfs_client",
                "image_push", "isolation", "processes", "ring_status", "user_credential", "cluster_wait", "__main__",
                "ledger_cli", "client", "client_errors", "client_http", "introducer_cache", "event_cli",
                "rm_lookup", "rm_verification", "contributor", "contributor_files", "node_leave_cli",
            }
        ),
    ),
)

# Generated code: its imports are the generator's business.
GENERATED = ("yarn_api/proto/", "internal/gen/")


@dataclass(frozen=True)
class Import:
    """``module`` (a file under the package root) imports ``target`` at ``line``."""

    path: str
    line: int
    module: str
    target: str


def unit_of(module: str) -> str:
    """The package (or top-level module) a dotted module name belongs to: its first part after ``cortex_rm``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def module_name(root: Path, path: Path) -> str:
    relative = path.relative_to(root.parent).with_suffix("")
    parts = list(relative.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(root: Path) -> Iterator[Import]:
    """Every import of a ``cortex_rm`` module by a hand-written module under ``root``."""
    package = root.name
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root).as_posix()
        if relative.startswith(GENERATED):
            continue
        module = module_name(root, path)
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: resolve against this module's package
                    base = module.split(".") if is_package else module.split(".")[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    targets = [".".join(base + ([node.module] if node.module else []))]
                elif node.module == package:  # `from cortex_rm import local_cluster`: the module named
                    targets = [
                        f"{package}.{a.name}" if (root / f"{a.name}.py").exists() or (root / a.name).is_dir() else package
                        for a in node.names
                    ]
                elif node.module:
                    targets = [node.module]
            for target in targets:
                if target == package or target.startswith(package + "."):
                    yield Import(relative, node.lineno, module, target)


def layer_index(layers: Sequence[tuple[str, frozenset[str]]]) -> Mapping[str, int]:
    return {unit: i for i, (_, units) in enumerate(layers) for unit in units}


def upward_imports(found: Sequence[Import], layers: Sequence[tuple[str, frozenset[str]]]) -> list[str]:
    """One line per import that runs to a higher layer, or from or to a unit no layer names."""
    index = layer_index(layers)
    problems = []
    for imp in found:
        src, dst = unit_of(imp.module), unit_of(imp.target)
        for unit in (src, dst):
            if unit not in index:
                problems.append(f"{imp.path}:{imp.line}: {unit or '(root)'} is in no layer; add it to LAYERS")
        if src in index and dst in index and index[dst] > index[src]:
            problems.append(
                f"{imp.path}:{imp.line}: {imp.module} ({layers[index[src]][0]}) imports {imp.target} "
                f"({layers[index[dst]][0]}), a higher layer"
            )
    return problems


def package_cycles(found: Sequence[Import]) -> list[list[str]]:
    """The cycles of the graph of imports between units (each cycle once, as a path back to its start)."""
    graph: dict[str, set[str]] = {}
    for imp in found:
        src, dst = unit_of(imp.module), unit_of(imp.target)
        if src != dst:
            graph.setdefault(src, set()).add(dst)
    cycles: list[list[str]] = []
    seen: set[frozenset[str]] = set()

    def walk(node: str, path: list[str]) -> None:
        for nxt in sorted(graph.get(node, ())):
            if nxt == path[0]:
                key = frozenset(path)
                if key not in seen:
                    seen.add(key)
                    cycles.append([*path, nxt])
            elif nxt not in path and nxt > path[0]:  # each cycle from its smallest unit only
                walk(nxt, [*path, nxt])

    for start in sorted(graph):
        walk(start, [start])
    return cycles


def test_every_import_runs_down_the_layers() -> None:
    """No module imports from a layer above its own, and every package belongs to a layer."""
    problems = upward_imports(list(imports_of(ROOT)), LAYERS)
    assert not problems, "imports against the layers:\n" + "\n".join(problems)


def test_no_packages_import_each_other_in_a_cycle() -> None:
    """The packages form a directed acyclic graph, within a layer too."""
    cycles = package_cycles(list(imports_of(ROOT)))
    assert not cycles, "package cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_checks_catch_an_upward_import_and_a_cycle(tmp_path: Path) -> None:
    """A core importing a role, or two cores importing each other, is reported with file and line."""
    package = tmp_path / "cortex_rm"
    for name, source in {
        "__init__.py": "",
        "yarn/__init__.py": "",
        "yarn/ids.py": "X = 1\n",
        "roles/__init__.py": "",
        "roles/node_manager.py": "from cortex_rm.container.runtime import Y\n",
        "container/__init__.py": "",
        "container/runtime.py": "from cortex_rm.yarn.ids import X\nY = X\n",
        "container/launch.py": "def f():\n    from cortex_rm.roles.node_manager import Y\n",
        "dht/__init__.py": "",
        "dht/peer.py": "from ..container import runtime\n",
        "container/tokens.py": "import cortex_rm.dht.peer\n",
    }.items():
        (package / name).parent.mkdir(parents=True, exist_ok=True)
        (package / name).write_text(source)
    found = list(imports_of(package))
    assert upward_imports(found, LAYERS) == [
        "container/launch.py:2: cortex_rm.container.launch (cores) imports cortex_rm.roles.node_manager (roles), "
        "a higher layer"
    ]
    assert package_cycles(found) == [["container", "dht", "container"], ["container", "roles", "container"]]
