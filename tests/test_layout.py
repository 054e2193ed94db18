"""Package layout: the core never imports a host, modules import on their own, old pickled paths still load."""
from __future__ import annotations

import ast
import io
import pkgutil
import re
import zipfile
from pathlib import Path

import pytest
import torch
from torch import nn

import yolo_backbones
from yolo_backbones import Select, create, load_checkpoint

from helpers import DETECTION

MODULES = sorted(m.name for m in pkgutil.walk_packages(yolo_backbones.__path__, "yolo_backbones."))


def _imports_of(path: Path, package: str) -> set[str]:
    """Absolute names of the modules ``path`` (a module of ``package``) imports, at any nesting level."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")
            base = base[: len(base) - node.level + 1] if node.level else []
            found.add(".".join(base + ([node.module] if node.module else [])))
    return found


def test_core_imports_nothing_outside_the_core():
    core = Path(yolo_backbones.__file__).parent / "core"
    offenders = {}
    for path in core.rglob("*.py"):
        rel = path.relative_to(core.parent.parent).with_suffix("")
        package = ".".join(rel.parts[:-1] if path.name != "__init__.py" else rel.parts[:-1])
        bad = {m for m in _imports_of(path, package)
               if m.split(".")[0] in ("yolov5", "ultralytics", "models", "utils")
               or (m.startswith("yolo_backbones") and not m.startswith("yolo_backbones.core"))}
        if bad:
            offenders[str(rel)] = sorted(bad)
    assert not offenders


def _module_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports (at any nesting level, lazy imports included)."""
    root = Path(yolo_backbones.__file__).parent
    names = set(MODULES) | {"yolo_backbones"}
    graph = {}
    for path in root.rglob("*.py"):
        rel = path.relative_to(root.parent).with_suffix("")
        name = ".".join(rel.parts[:-1] if path.name == "__init__.py" else rel.parts)
        package = ".".join(rel.parts[:-1])
        targets = set()
        for imported in _imports_of(path, package):
            # `from . import x` names a submodule or an attribute: keep the longest existing module name
            while imported and imported not in names:
                imported = imported.rpartition(".")[0]
            if imported and imported != name and not name.startswith(imported + "."):
                targets.add(imported)
        graph[name] = targets
    return graph


def test_no_import_cycles_between_modules():
    graph = _module_graph()
    assert len(graph) > 30
    assert not _cycles(graph)
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]  # the check works


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every back edge found by a depth-first search, as the cycle it closes."""
    cycles, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                cycles.append(stack[stack.index(target):] + [target])
            elif target not in state:
                visit(target, stack + [target])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return cycles


# Where each class lived in yolo-backbones 0.1; checkpoints saved then name these modules.
_OLD_PATHS = [
    (r"yolo_backbones\.core\.layers\.\w+\n", "yolo_backbones.layers\n"),
    (r"yolo_backbones\.core\.edgevit(\.\w+)?\n", "yolo_backbones.backbones.edgevit\n"),
    (r"yolo_backbones\.core\.mobileformer(\.\w+)?\n", "yolo_backbones.backbones.mobileformer\n"),
    (r"yolo_backbones\.core\.efficientformer\.v1\n", "yolo_backbones.backbones.efficientformer\n"),
    (r"yolo_backbones\.core\.efficientformer\.v2\n", "yolo_backbones.backbones.efficientformer_v2\n"),
    (r"yolo_backbones\.core\.select\n", "yolo_backbones.yolov5_patch\n"),
]


def _as_old_layout(buffer: bytes) -> bytes:
    """Rewrite the class paths in a torch.save zip (protocol-2 GLOBAL opcodes are plain text lines)."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(buffer)) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith("/data.pkl"):
                text = data.decode("latin-1")
                for pattern, old in _OLD_PATHS:
                    text = re.sub(pattern, old, text)
                assert "yolo_backbones.core" not in text
                data = text.encode("latin-1")
            dst.writestr(info, data)
    return out.getvalue()


@pytest.mark.parametrize("name", ["edgevit_xxs", "mobileformer_26m", "efficientformer_l1", "efficientformerv2_s0"])
def test_checkpoint_with_pre_0_2_module_paths_loads(name, tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(create(name, **DETECTION, out_indices=(1, 2, 3)), Select(1)).eval()
    buffer = io.BytesIO()
    torch.save({"model": model, "epoch": 3}, buffer)
    old = tmp_path / "old_layout.pt"
    old.write_bytes(_as_old_layout(buffer.getvalue()))
    assert b"yolo_backbones.backbones" in old.read_bytes() or b"yolo_backbones.layers" in old.read_bytes()

    loaded = load_checkpoint(old, map_location="cpu")["model"].eval()
    assert type(loaded[0]) is type(model[0]) and type(loaded[1]) is Select
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
