"""The tree as the README's layout section draws it: every shell module in a folder named for
its layer, layers importing one way, routes not importing each other, one module naming a
session's files, no setting read by string in the worker or the routes."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SERVICE = REPO / "service" / "stimloop"
CLIENT = REPO / "client" / "stimloop_rig"
LAYERS = ("science", "storage", "worker", "api", "reports", "runtime")
ENTRY_POINTS = ("__init__.py", "cli.py", "serve.py", "demo.py")
# which layer may import which (besides itself); the README's import map
ALLOWED = {
    "science": set(),
    "storage": {"science", "client"},
    "worker": {"science", "storage", "runtime", "reports"},
    "reports": {"science", "storage", "client"},
    "api": {"science", "storage", "runtime", "reports", "client", "worker.queue"},
    "runtime": {"storage", "worker.queue"},
    "client": {"science.configs"},
}


def modules(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts)


def imports(path: Path) -> list[str]:
    return re.findall(r"^\s*(?:from|import) (stimloop(?:_rig)?[\w.]*)", path.read_text(), re.M)


def test_every_shell_module_sits_in_a_folder_named_for_its_layer():
    loose = sorted(p.name for p in SERVICE.glob("*.py") if p.name not in ENTRY_POINTS)
    assert loose == []
    folders = sorted(p.name for p in SERVICE.iterdir() if p.is_dir() and p.name != "__pycache__")
    assert folders == sorted([*LAYERS, "defaults"])


def test_layers_import_one_way():
    wrong = []
    for path in modules(SERVICE) + modules(CLIENT):
        if path.is_relative_to(CLIENT):
            layer = "client"
        elif path.parent == SERVICE:
            continue  # the entry points wire the layers together
        else:
            layer = path.relative_to(SERVICE).parts[0]
        for name in imports(path):
            parts = name.split(".")
            target = "client" if parts[0] == "stimloop_rig" else ".".join(parts[1:2])
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
        for p in modules(SERVICE) + modules(CLIENT)
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
    assert "client/stimloop_rig/" in layout
    for layer in ALLOWED:
        assert re.search(rf"^{layer}\s+->", layout, re.M), f"the import map misses {layer}"
