"""Every dotted cross-reference in the package's docstrings/comments and in the docs names something that exists.

A reference is ``yolo_backbones.<dotted path>`` anywhere in the text, or a Sphinx role (:mod:, :func:, :class:,
:meth:, :data:, :attr:, :exc:) inside the package's modules, resolved relative to the module it appears in.
"""
from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "yolo_backbones"
DOTTED = re.compile(r"(?<![\w./-])(yolo_backbones(?:\.[A-Za-z_]\w*)+)")
ROLE = re.compile(r":(?:mod|func|class|meth|data|attr|exc):`~?([.\w]+)`")
FILE_SUFFIXES = (".pth", ".py", ".yaml", ".md", ".json", ".txt")
OLD_LAYOUT_WORDS = re.compile(r"\b(old|moved|legacy|alias|resolve to)", re.IGNORECASE)
ALIAS_TABLE = "yolo_backbones/legacy.py"  # the table of old paths itself


def resolve(dotted: str) -> bool:
    """True when ``dotted`` is an importable module or an attribute (chain) of one; ``module:name`` (a bare name
    written in ``module``) also resolves to an attribute of a class defined there (a method named without its class).
    """
    if ":" in dotted:
        module, name = dotted.split(":")
        classes = [v for v in vars(importlib.import_module(module)).values() if isinstance(v, type)]
        return any(hasattr(cls, name) or name in getattr(cls, "__annotations__", {}) for cls in classes)
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            if not hasattr(obj, name):
                return name in getattr(obj, "__annotations__", {})  # a field (dataclass, annotated attribute)
            obj = getattr(obj, name)
        return True
    return False


def module_name(path: Path) -> str:
    """Dotted module name of a file of the package."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def role_target(module: str, is_package: bool, target: str) -> list[str]:
    """Candidate absolute names of a role's target written in ``module``."""
    if target.startswith("yolo_backbones"):
        return [target]
    if target.startswith("."):
        base = module.split(".") if is_package else module.split(".")[:-1]
        dots = len(target) - len(target.lstrip("."))
        base = base[: len(base) - (dots - 1)] if dots > 1 else base
        return [".".join(base + [target.lstrip(".")])]
    # a bare name: this module's global, or a name of the module's own package, or something absolute
    candidates = [f"{module}.{target}", ".".join(module.split(".")[:-1] + [target]), target]
    return candidates + ([f"{module}:{target}"] if "." not in target else [])


def legacy_path(ref: str) -> bool:
    """True for a module path of the old layout that only resolves through :mod:`yolo_backbones.legacy`'s aliases."""
    from yolo_backbones.legacy import MODULE_ALIASES

    return any(ref == old or ref.startswith(old + ".") for old in MODULE_ALIASES)


def references() -> list[tuple[str, str, list[str], bool]]:
    """(where, written reference, candidate absolute names, line speaks of old paths) for every reference found.

    ``where`` is ``file:line``; a line that speaks of old/moved/legacy paths may name the old layout on purpose.
    """
    found = []
    texts = [(p, module_name(p)) for p in sorted(PACKAGE.rglob("*.py"))]
    docs = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    for path in [p for p, _ in texts] + docs:
        module = module_name(path) if path.suffix == ".py" else None
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            where = f"{path.relative_to(ROOT)}:{number}"
            for match in DOTTED.finditer(line):
                ref = match.group(1)
                if not ref.endswith(FILE_SUFFIXES):
                    about_old = OLD_LAYOUT_WORDS.search(line) is not None or where.startswith(ALIAS_TABLE)
                    found.append((where, ref, [ref], about_old))
            for match in ROLE.finditer(line) if module else ():
                target = match.group(1)
                if target.startswith(("torch", "yolov5", "ultralytics", "numpy", "timm", "openvino", "onnx")):
                    continue  # other projects' names: not ours to keep in step
                found.append((where, target, role_target(module, path.name == "__init__.py", target), False))
    return found


REFERENCES = references()


def test_references_were_found() -> None:
    assert len(REFERENCES) > 20


@pytest.mark.parametrize("where, ref, candidates, about_old_paths", REFERENCES,
                         ids=[f"{w}:{r}" for w, r, *_ in REFERENCES])
def test_reference_resolves(where: str, ref: str, candidates: list[str], about_old_paths: bool) -> None:
    assert any(resolve(c) for c in candidates), f"{where} names {ref!r}, which does not exist"
    if not about_old_paths:
        assert not legacy_path(ref), f"{where} names {ref!r}, a path of the old layout (kept only for old pickles)"
