"""Print vegediff_cli's package-level import graph; exit 1 on a package cycle or an import of a higher layer.

Every ``import`` and ``from ... import`` of every module counts (also those inside functions and
under TYPE_CHECKING). Modules collapse to their package: ``pipeline/forecast/plan.py`` is
``pipeline.forecast``, ``cube/cog.py`` is ``cube``, a top-level module is itself.

Layers (docs/STYLE: imports point down the list; a package may import its own layer or lower):

    0  config errors geo and the small helpers (atomic, redact, progress, workdir, ...)
    1  sources cube metrics qgis          data in and out, pure scores, QGIS styling
    2  diffusion model                    torch and config only: diffusion imports nothing of model
    3  pipeline.* training resources      arrays in, arrays out; files through layer 1
    4  cli __main__                       parses, prints, maps errors to exit codes

Usage: python scripts/import_graph.py [PACKAGE_DIR]   (default: vegediff_cli next to this script)
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

ROOT = "vegediff_cli"
LAYERS: dict[str, int] = {
    "__init__": 0, "config": 0, "errors": 0, "geo": 0, "io_errors": 0, "atomic": 0, "redact": 0,
    "progress": 0, "workdir": 0, "plots": 0, "dates": 0,
    "sources": 1, "cube": 1, "metrics": 1, "qgis": 1,
    "diffusion": 2, "model": 2,
    "pipeline": 3, "training": 3, "resources": 3,
    "cli": 4, "__main__": 4,
}
# torch-only packages: what each may import of the package besides itself (errors for messages; model's
# weights files are written atomically)
ONLY = {"diffusion": {"config", "errors"}, "model": {"config", "errors", "atomic", "diffusion"}}


def node_of(module: str, package_dir: Path) -> str:
    """vegediff_cli.pipeline.forecast.plan -> pipeline.forecast; vegediff_cli.cube.cog -> cube."""
    parts = module.split(".")[1:] or ["__init__"]
    if parts[0] == "pipeline" and len(parts) >= 2 and (package_dir / "pipeline" / parts[1]).is_dir():
        return ".".join(parts[:2])
    return parts[0]


def layer_of(node: str) -> int:
    top = node.split(".")[0]
    if top not in LAYERS:
        raise SystemExit(f"import_graph: no layer for {top!r}; add it to LAYERS in {__file__}")
    return LAYERS[top]


def module_name(path: Path, package_dir: Path) -> tuple[str, bool]:
    rel = path.relative_to(package_dir.parent).with_suffix("")
    parts = list(rel.parts)
    is_package = parts[-1] == "__init__"
    return ".".join(parts[:-1] if is_package else parts), is_package


def imports_of(path: Path, module: str, is_package: bool) -> set[str]:
    """Absolute names of the vegediff_cli modules `path` imports."""
    base = module.split(".") if is_package else module.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == ROOT)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = base[: len(base) - (node.level - 1)]
                target = ".".join(anchor + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != ROOT:
                continue
            found.add(target)
            found.update(f"{target}.{a.name}" for a in node.names)  # `from . import frames`: a module, maybe
    return found


def graph(package_dir: Path) -> dict[str, set[str]]:
    modules = {}
    for path in sorted(package_dir.rglob("*.py")):
        name, is_package = module_name(path, package_dir)
        modules[name] = (path, is_package)
    edges: dict[str, set[str]] = defaultdict(set)
    for name, (path, is_package) in modules.items():
        src = node_of(name, package_dir)
        edges[src]
        for target in imports_of(path, name, is_package):
            while target not in modules and "." in target:  # `from .x import name`: name is not a module
                target = target.rsplit(".", 1)[0]
            dst = node_of(target, package_dir)
            if dst != src and not (target == ROOT and src != "__init__"):
                edges[src].add(dst)
            elif target == ROOT:  # `from .. import __version__`: the package's own __init__
                edges[src].add("__init__") if src != "__init__" else None
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def problems(edges: dict[str, set[str]]) -> list[str]:
    out = [f"cycle: {' <-> '.join(c)}" for c in cycles(edges)]
    for src, targets in sorted(edges.items()):
        for dst in sorted(targets):
            if layer_of(dst) > layer_of(src):
                out.append(f"upward import: {src} (layer {layer_of(src)}) imports {dst} (layer {layer_of(dst)})")
            top = src.split(".")[0]
            if top in ONLY and dst.split(".")[0] != top and dst not in ONLY[top]:
                out.append(f"{top} may import only torch and {', '.join(sorted(ONLY[top]))}: it imports {dst}")
    return out


def main(argv: list[str]) -> int:
    package_dir = Path(argv[0]) if argv else Path(__file__).resolve().parents[1] / ROOT
    edges = graph(package_dir)
    for src in sorted(edges, key=lambda n: (layer_of(n), n)):
        print(f"[{layer_of(src)}] {src:<20} -> {', '.join(sorted(edges[src])) or '-'}")
    found = problems(edges)
    for line in found:
        print(f"FAIL {line}")
    print("OK: no package cycle, no upward import" if not found else f"{len(found)} problem(s)")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
