"""A regular (non-editable) install: the wheel carries models/ and data/, and bare names work outside the checkout."""
from __future__ import annotations

import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from conftest import run

pytestmark = pytest.mark.slow  # end-to-end: subprocesses, training, exports

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q", "-w", str(out),
         str(ROOT)], cwd=out)
    (found,) = out.glob("yolo_backbones-*.whl")
    return found


def test_wheel_ships_the_yamls_the_embedded_data_and_the_hook(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "yolo_backbones.pth" in names and "yolo_backbones_autoload.py" in names
    for yaml_file in (ROOT / "models").glob("*.yaml"):
        assert f"yolo_backbones/_resources/models/{yaml_file.name}" in names
    assert "yolo_backbones/_resources/data/coco8.yaml" in names
    images = [n for n in names if n.startswith("yolo_backbones/_resources/data/coco8/images/")]
    assert len(images) == len(list((ROOT / "data" / "coco8" / "images").rglob("*.jpg")))
    # every module of the package, sub-packages included (a folder without __init__.py was left out once)
    for module in (ROOT / "yolo_backbones").rglob("*.py"):
        assert module.relative_to(ROOT).as_posix() in names


def test_installed_wheel_trains_from_bare_names_outside_the_checkout(wheel: Path, tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], check=True)
    python = env_dir / "bin" / "python"
    purelib = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                  capture_output=True, text=True, check=True).stdout.strip())
    # The dependencies (torch, yolov5, ...) come from this environment's site-packages, added as a plain path
    # (its .pth files, including the editable install of the checkout, are not processed).
    deps = Path(sysconfig.get_paths()["purelib"])
    (purelib / "_test_dependencies.pth").write_text(f"{deps}\n")
    run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "-q", str(wheel)],
        cwd=tmp_path)
    work = tmp_path / "elsewhere"
    work.mkdir()
    where = run([str(python), "-c", "import yolo_backbones, yolo_backbones.resources as r; "
                 "print(yolo_backbones.__file__); print(r.find_resource('yolov5_edgevit.yaml'))"], cwd=work)
    module_file, yaml_path = where.stdout.split()
    assert Path(module_file).is_relative_to(purelib) and not Path(module_file).is_relative_to(ROOT)
    assert Path(yaml_path).is_relative_to(purelib / "yolo_backbones" / "_resources")
    run([str(python), "-m", "yolo_backbones.cli", "train", "--cfg", "yolov5_edgevit.yaml", "--data", "coco8.yaml",
         "--epochs", "1", "--img", "64", "--batch-size", "4", "--workers", "0", "--device", "cpu",
         "--project", str(work / "runs"), "--name", "exp"], cwd=work)
    assert (work / "runs" / "exp" / "weights" / "best.pt").is_file()
