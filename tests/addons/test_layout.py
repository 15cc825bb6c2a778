"""The package picture ARCHITECTURE.md draws, checked: ``addons/`` holds the chain's addons at its top,
each subsystem is a package beneath it, and a package imports only the packages below it."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ADDONS = ROOT / "addons"

# A package may import itself and the packages named here, never an addon module (addons/*.py).
MAY_IMPORT = {
    "flow": set(),
    "bodies": {"flow"},
    "rules": {"flow", "bodies"},
    "store": {"flow", "bodies", "rules"},
    "masking": {"flow", "bodies", "rules"},
    "auth": {"flow", "bodies", "rules", "store"},
    "approvals": {"flow", "bodies", "rules", "store"},
    "screening": {"flow", "bodies", "rules", "masking"},
    "evidence": {"flow", "bodies", "rules", "store"},
    "siem": {"flow", "bodies", "rules", "store"},
    "adminapi": {"flow", "bodies", "rules", "store", "auth", "approvals", "evidence", "siem"},
}


def warden_imports(path: Path) -> list[tuple[int, str]]:
    """Every ``addons.*`` module ``path`` imports (at any depth: lazy imports count), with its line. ``from addons
    import pii`` names ``addons.pii``; a relative import is resolved from ``path``'s package."""
    package = list(path.relative_to(ROOT).parent.parts)
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            if module == "addons" or (node.level and not node.module):  # names are modules of that package
                found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names]
            elif module.startswith("addons."):
                found.append((node.lineno, module))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names if alias.name.startswith("addons.")]
    return [(line, name) for line, name in found if name.startswith("addons.")]


def test_each_package_imports_only_the_packages_below_it() -> None:
    assert {p.name for p in ADDONS.iterdir() if (p / "__init__.py").exists()} == set(MAY_IMPORT)
    wrong = []
    for package, allowed in MAY_IMPORT.items():
        for path in sorted((ADDONS / package).rglob("*.py")):
            for line, name in warden_imports(path):
                target = name.split(".")[1]
                if target != package and target not in allowed:
                    wrong.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    assert not wrong, "\n".join(wrong)


def test_the_top_of_addons_holds_the_chain_and_nothing_else() -> None:
    modules = {p.stem for p in ADDONS.glob("*.py")} - {"__init__", "gateway"}
    chain = {name.split(".")[1] for _, name in warden_imports(ADDONS / "gateway.py")}
    assert modules == chain, f"modules at the top of addons/ that are not in the chain: {sorted(modules - chain)}"
    for name in sorted(modules):
        tree = ast.parse((ADDONS / f"{name}.py").read_text())
        hooks = {"load", "configure", "running", "done", "requestheaders", "request", "responseheaders", "response",
                 "error", "http_connect", "next_layer", "websocket_start", "websocket_message", "websocket_end",
                 "client_connected", "client_disconnected"}
        classes = [n for n in tree.body if isinstance(n, ast.ClassDef)
                   and hooks & {f.name for f in n.body if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef)}]
        assert classes, f"addons/{name}.py defines no addon (a class with a mitmproxy hook)"
        # Addons meet in flow.metadata and through ctx.master.addons.get, never by importing each other.
        others = [imported for _, imported in warden_imports(ADDONS / f"{name}.py")
                  if imported.split(".")[1] in modules]
        assert not others, f"addons/{name}.py imports another addon: {others}"


def _module(name: str) -> str | None:
    """The Warden module ``name`` denotes (a module or package of ``addons``), None if it is an attribute."""
    path = ROOT.joinpath(*name.split("."))
    return name if path.with_suffix(".py").exists() or (path / "__init__.py").exists() else None


def test_no_module_imports_itself_back() -> None:
    """The module graph (top-level imports, which run at import time) has no cycle."""
    graph: dict[str, set[str]] = {}
    for path in ADDONS.rglob("*.py"):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        edges = graph.setdefault(module, set())
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ImportFrom) and node.module and not node.level and node.module.startswith("addons"):
                edges |= {_module(f"{node.module}.{a.name}") or node.module for a in node.names}
            elif isinstance(node, ast.Import):
                edges |= {a.name for a in node.names if a.name.startswith("addons.")}
        edges.discard(module)
    state: dict[str, str] = {}

    def visit(module: str, trail: list[str]) -> None:
        assert state.get(module) != "open", "import cycle: " + " -> ".join(trail + [module])
        if module in state:
            return
        state[module] = "open"
        for name in sorted(graph.get(module, ())):
            visit(name, trail + [module])
        state[module] = "done"

    for module in sorted(graph):
        visit(module, [])


def test_the_import_rules_see_every_spelling_of_an_import(monkeypatch) -> None:
    """``from addons import pii`` and relative imports name their module: a package cannot reach an addon unseen."""
    module = ADDONS / "masking" / "payloads" / "base.py"
    source = "from addons import pii, recorder\nfrom .. import stream\nfrom ...flow.meta import PII\n" \
             "from . import text\nfrom ...recorder import Recorder\nimport addons.identity\n"
    real = Path.read_text
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: source if self == module else real(self, *a, **k))
    assert warden_imports(module) == [
        (1, "addons.pii"), (1, "addons.recorder"), (2, "addons.masking.stream"), (3, "addons.flow.meta"),
        (4, "addons.masking.payloads.text"), (5, "addons.recorder"), (6, "addons.identity"),
    ]
