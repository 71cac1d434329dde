"""The tree as the README's layout section draws it: the contract importing nothing of ours,
the rig client and the server never importing each other, no circle anywhere, every shell
module in a folder named for its layer, layers importing one way, routes not importing each
other, one module naming a session's files, no setting read by string in the worker or the
routes."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from tests.support.paths import REPO

SERVICE = REPO / "service" / "stimloop"
CONTRACT = REPO / "client" / "stimloop_contract"
CLIENT = REPO / "client" / "stimloop_rig"
PACKAGES = {"stimloop": SERVICE, "stimloop_contract": CONTRACT, "stimloop_rig": CLIENT}
LAYERS = ("science", "storage", "worker", "sessions", "api", "reports", "runtime")
ENTRY_POINTS = ("__init__.py", "cli.py", "serve.py", "demo.py")
# which layer of the server may import which (besides itself and the contract, which every
# layer may use, except science: the configs only); the README's import map
ALLOWED = {
    "science": set(),
    "storage": {"science"},
    "worker": {"science", "storage", "runtime", "reports"},
    "reports": {"science", "storage"},
    "sessions": {"storage", "runtime", "reports", "worker.queue"},
    "api": {"sessions", "science", "storage", "runtime", "reports", "worker.queue"},
    "runtime": {"storage", "worker.queue"},
}


def modules(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts)


def imports(path: Path, submodules: bool = False) -> list[str]:
    """Every module of ours that ``path`` imports, at its top or inside a function; with
    ``submodules``, ``from package import name`` also as ``package.name`` (a module, or not)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
            if submodules:
                found += [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
    return [name for name in found if name.split(".")[0] in PACKAGES]


def module_name(path: Path) -> str:
    package, root = next((k, v) for k, v in PACKAGES.items() if path.is_relative_to(v))
    parts = [package, *path.relative_to(root).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_the_contract_imports_nothing_of_ours():
    wrong = [
        f"{p.relative_to(REPO)} imports {name}"
        for p in modules(CONTRACT)
        for name in imports(p)
        if name.split(".")[0] != "stimloop_contract"
    ]
    assert wrong == []


def test_the_rig_client_and_the_server_never_import_each_other():
    wrong = [
        f"{p.relative_to(REPO)} imports {name}"
        for root, other in ((CLIENT, "stimloop"), (SERVICE, "stimloop_rig"))
        for p in modules(root)
        for name in imports(p)
        if name.split(".")[0] == other
    ]
    assert wrong == []


def test_no_module_imports_itself_through_others():
    """No circle of imports among all three packages (at the top or inside functions)."""
    paths = {module_name(p): p for root in PACKAGES.values() for p in modules(root)}
    graph = {
        name: {i for i in imports(path, submodules=True) if i in paths and i != name}
        for name, path in paths.items()
    }
    circles, done = [], set()

    def visit(name: str, trail: list[str]) -> None:
        if name in trail:
            circles.append(" -> ".join([*trail[trail.index(name) :], name]))
            return
        if name in done:
            return
        for target in sorted(graph[name]):
            visit(target, [*trail, name])
        done.add(name)

    for name in sorted(graph):
        visit(name, [])
    assert circles == []


def test_science_reads_only_the_contracts_configs():
    wrong = [
        f"{p.relative_to(REPO)} imports {name}"
        for p in modules(SERVICE / "science")
        for name in imports(p)
        if name.split(".")[0] == "stimloop_contract" and name != "stimloop_contract.configs"
    ]
    assert wrong == []


def test_every_shell_module_sits_in_a_folder_named_for_its_layer():
    loose = sorted(p.name for p in SERVICE.glob("*.py") if p.name not in ENTRY_POINTS)
    assert loose == []
    folders = sorted(p.name for p in SERVICE.iterdir() if p.is_dir() and p.name != "__pycache__")
    assert folders == sorted([*LAYERS, "defaults"])


def test_layers_import_one_way():
    wrong = []
    for path in modules(SERVICE):
        if path.parent == SERVICE:
            continue  # the entry points wire the layers together
        layer = path.relative_to(SERVICE).parts[0]
        for name in imports(path):
            parts = name.split(".")
            if parts[0] != "stimloop":
                continue  # the contract (science's use of it: above)
            target = ".".join(parts[1:2])
            if target in ("", layer):
                continue
            allowed = ALLOWED[layer]
            if target not in allowed and ".".join(parts[1:3]) not in allowed:
                wrong.append(f"{path.relative_to(REPO)} imports {name}")
    assert wrong == []


def test_routes_never_import_each_other():
    routes = SERVICE / "api" / "routes"
    wrong = [
        f"{p.name} imports {name}"
        for p in modules(routes)
        for name in imports(p)
        if name.startswith("stimloop.api.routes")
    ]
    assert wrong == []


def test_only_the_session_module_names_a_sessions_files_and_settings_are_typed():
    names = re.compile(
        r"[\"'](session|selection|analysis|channels|readouts|list)\.(json|npz)[\"']"
        r"|[\"']phase[123]\.npz[\"']|[\"']stimuli\.zip[\"']"
    )
    session_module = SERVICE / "storage" / "session.py"
    named = [
        f"{p.relative_to(REPO)}: {m.group(0)}"
        for p in modules(SERVICE) + modules(CONTRACT) + modules(CLIENT)
        if p != session_module
        for m in names.finditer(p.read_text())
    ]
    assert named == []
    by_string = [
        str(p.relative_to(REPO))
        for folder in (SERVICE / "worker", SERVICE / "api")
        for p in modules(folder)
        if 'config["' in p.read_text()
    ]
    assert by_string == []


def test_the_readme_layout_names_every_folder_of_the_tree():
    readme = (REPO / "README.md").read_text()
    layout = readme[readme.index("### Layout") : readme.index("### Tests and benchmarks")]
    for layer in LAYERS:
        assert f"service/stimloop/{layer}/" in layout, layer
    assert "client/stimloop_rig/" in layout and "client/stimloop_contract/" in layout
    for layer in [*ALLOWED, "contract", "client"]:
        assert re.search(rf"^{layer}\s+->", layout, re.M), f"the import map misses {layer}"


def test_tests_share_helpers_through_tests_support_only():
    """No test module (or conftest) imports another: shared helpers live in tests/support/."""
    tests = REPO / "tests"
    wrong = []
    for path in modules(tests):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            ours = [n for n in names if n.split(".")[0] == "tests"]
            if ours and not any(n.startswith("tests.support") for n in ours):
                wrong.append(f"{path.relative_to(REPO)} imports {ours[0]}")
    assert wrong == []


def test_the_use_cases_know_nothing_of_http():
    """``sessions/`` raises domain errors; only ``api/`` speaks HTTP (FastAPI, Starlette)."""
    wrong = []
    for path in modules(SERVICE / "sessions"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else []
            )
            wrong += [
                f"{path.relative_to(REPO)} imports {n}"
                for n in names
                if n.split(".")[0] in ("fastapi", "starlette") or n.startswith("stimloop.api")
            ]
    assert wrong == []
