"""The house rules, read from the code itself: no import cycles (function-level imports included), each
package imports only the layers below it and so does each room of orchestrator, one owner for the sweep dir's layout, every third-party import
declared as a dependency, and no reference to notes outside the repository."""
from __future__ import annotations

import ast
import importlib.metadata
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("orchestrator", "methods", "evals", "analysis")
# what each package may import from the project (besides itself): orchestrator -> the rest, never back
ALLOWED = {"orchestrator": {"methods", "evals", "analysis"}, "analysis": {"methods", "evals"},
           "methods": set(), "evals": set()}
# orchestrator's rooms, lowest first (docs/architecture.md): a module imports its own room, rooms below it
# and the foundation (orchestrator's top-level modules: config, files, process), never a room above it
ROOMS = ("storage", "trials", "tracking", "results", "sweep", "cli")
SWEEP_DIR_OWNER = "orchestrator.storage.sweep_dir"
# file and folder names of the sweep dir's layout; only their owner may spell them
LAYOUT_NAMES = ("sweep_config.json", "summary.json", "report.html", "optuna.db", "mlflow.db", "mlartifacts",
                "result.json", "rewind.json", "rewound", "trials", "checkpoints", "timing", "figures",
                "pareto.json", "geometry.json", "geometry.html", "rewind.html")


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """Project modules `name` imports anywhere in its body (top level or inside functions)."""
    found = set()
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for target in targets:
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _cycles() -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), i.e. every import cycle."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in GRAPH[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(GRAPH):
        if node not in index:
            visit(node)
    return found


def test_the_import_graph_is_read():
    assert len(MODULES) > 30
    assert "orchestrator.storage.sweep_dir" in GRAPH["orchestrator.trials.trial"]
    assert "methods.registry" in GRAPH["methods.interpolate"]  # a function-level import counts too


def test_no_import_cycles_among_the_projects_modules():
    assert _cycles() == []


def test_a_planted_cycle_is_found(monkeypatch):
    """The check itself can fail: a back edge from the registry to the trial closes a cycle."""
    monkeypatch.setitem(GRAPH, "methods.registry", GRAPH["methods.registry"] | {"orchestrator.trials.trial"})
    assert any("methods.registry" in c and "orchestrator.trials.trial" in c for c in _cycles())


@pytest.mark.parametrize("module", sorted(MODULES))
def test_each_package_imports_only_the_layers_below_it(module):
    package = module.split(".")[0]
    reached = {target.split(".")[0] for target in GRAPH[module]} - {package}
    assert reached <= ALLOWED[package], f"{module} imports {sorted(reached - ALLOWED[package])}"


def _room(module: str) -> int:
    """A module's rank in orchestrator: -1 for the foundation, else its room's place in ROOMS."""
    parts = module.split(".")
    return ROOMS.index(parts[1]) if len(parts) > 2 else -1


def _rooms_above(module: str) -> list[str]:
    """The orchestrator modules `module` imports from a room above its own."""
    return sorted(t for t in GRAPH[module] if t.startswith("orchestrator.") and _room(t) > _room(module))


def test_orchestrator_is_made_of_the_rooms_the_architecture_names():
    rooms = {m.split(".")[1] for m in MODULES if m.startswith("orchestrator.") and m.count(".") >= 2}
    foundation = {m for m in MODULES if m.startswith("orchestrator.") and m.count(".") == 1 and
                  m.split(".")[1] not in ROOMS}
    assert rooms == set(ROOMS) and foundation == {"orchestrator.config", "orchestrator.files", "orchestrator.process"}


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.startswith("orchestrator.")))
def test_each_room_of_orchestrator_imports_only_the_rooms_below_it(module):
    assert _rooms_above(module) == []


def test_a_planted_import_from_a_room_above_is_found(monkeypatch):
    """The check itself can fail: the sweep dir (storage) reaching up to the tuner (sweep) is refused."""
    monkeypatch.setitem(GRAPH, SWEEP_DIR_OWNER, GRAPH[SWEEP_DIR_OWNER] | {"orchestrator.sweep.tuner"})
    assert _rooms_above(SWEEP_DIR_OWNER) == ["orchestrator.sweep.tuner"]


PATH_CALLS = {"Path", "joinpath", "safe_join", "glob", "rglob", "with_name", "open"}


def _layout_literals(path: Path) -> list[str]:
    """Layout names used as paths: a file name anywhere, a folder name where a path is built (an operand
    of `/`, an argument of Path/joinpath/safe_join/glob, or inside a string with a slash). The same words
    as dict keys (a result's "checkpoints", a summary's "trials") are data, not paths."""
    tree = ast.parse(path.read_text())
    in_path = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            in_path |= {id(node.left), id(node.right)}
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in PATH_CALLS:
                in_path |= {id(a) for a in node.args}
    prose = {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Expr)}  # docstrings
    prose |= {id(k.value) for node in ast.walk(tree) if isinstance(node, ast.Call) for k in node.keywords
              if k.arg in ("help", "description")}  # text for people, not paths
    found = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Constant) and isinstance(node.value, str)) or id(node) in prose:
            continue
        value = node.value
        for name in LAYOUT_NAMES:
            file_name = "." in name and name in value
            as_path = value == name and id(node) in in_path
            in_slashed = "/" in value and re.search(rf"(^|/){re.escape(name)}(/|$)", value)
            if file_name or as_path or in_slashed:
                found.append(value)
                break
    return found


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m != SWEEP_DIR_OWNER))
def test_only_the_sweep_dir_owner_spells_its_layout(module):
    assert _layout_literals(MODULES[module]) == []


def test_the_owner_spells_the_whole_layout():
    owner = _layout_literals(MODULES[SWEEP_DIR_OWNER])
    assert {"result.json", "optuna.db", "mlflow.db", "trials", "checkpoints"} <= set(owner)


def _declared() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {re.split(r"[<>=!\[; ]", req, maxsplit=1)[0].lower().replace("_", "-") for req in project["dependencies"]}


def test_every_third_party_import_is_a_declared_dependency():
    distributions = importlib.metadata.packages_distributions()
    stdlib = set(sys.stdlib_module_names)
    declared = _declared()
    missing = {}
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                tops = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                tops = [(node.module or "").split(".")[0]]
            else:
                continue
            for top in tops:
                if top in stdlib or top in PACKAGES or top == "__future__":
                    continue
                owners = {d.lower().replace("_", "-") for d in distributions.get(top, [top])}
                if not owners & declared:
                    missing.setdefault(top, set()).add(name)
    assert missing == {}, f"imported but not in pyproject's dependencies: {missing}"


def test_every_document_the_repository_names_is_in_the_repository():
    """The product explains itself from the repo alone: each document or script it names (`*.md`, `*.sh`)
    exists in it, and no text cites a folder shared beside the checkout or a "...-notes" document kept there."""
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    present = {Path(rel).name for rel in tracked}
    named = re.compile(r"\b[\w.-]+\.(?:md|sh)\b")
    outside = re.compile(r"\.\./shared\b|\b\w+-notes\b", re.IGNORECASE)
    hits = []
    for rel in tracked:
        path = ROOT / rel
        if not path.is_file() or path.suffix in (".png", ".gz", ".db"):
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        for i, line in enumerate(text.splitlines(), 1):
            missing = [name for name in named.findall(line) if name not in present]
            if missing or outside.search(line):
                hits.append(f"{rel}:{i}: {line.strip()[:100]}")
    assert hits == []
