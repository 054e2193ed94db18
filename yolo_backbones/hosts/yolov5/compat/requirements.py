"""``check_requirements`` without pip: report what is missing, never install."""
from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path
from typing import Any


def _requirement_strings(requirements: Any, root: Path, exclude: tuple) -> list[str]:
    if requirements is None:  # the host's own requirements
        requirements = root / "requirements.txt"
        if not requirements.is_file():
            try:
                requirements = importlib.metadata.requires(root.name) or []
            except importlib.metadata.PackageNotFoundError:
                requirements = []
    if isinstance(requirements, Path):
        lines = requirements.read_text().splitlines() if requirements.is_file() else []
        requirements = [x.split("#")[0].strip() for x in lines if x.strip() and not x.strip().startswith(("#", "-"))]
    if isinstance(requirements, str):
        requirements = [requirements]
    names = [r for r in requirements if r]
    return [r for r in names if isinstance(r, (list, tuple)) or _req_name(r) not in exclude]


def _req_name(requirement: str) -> str:
    return re.split(r"[\[<>=!~;@ ]", requirement.strip(), maxsplit=1)[0]


def _satisfied(requirement: str | tuple | list) -> bool:
    """Installed and in range; a tuple/list nested in the requirements means any one of its items."""
    if isinstance(requirement, (list, tuple)):
        return any(_satisfied(r) for r in requirement)
    from packaging.requirements import InvalidRequirement, Requirement

    try:
        req = Requirement(requirement)
    except InvalidRequirement:
        return True  # e.g. a git URL: not checkable offline, not our business to fail on
    if req.marker is not None and not req.marker.evaluate({"extra": ""}):
        return True
    try:
        version = importlib.metadata.version(req.name)
    except importlib.metadata.PackageNotFoundError:
        return False
    return req.specifier.contains(version, prereleases=True)
