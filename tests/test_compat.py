"""Tests of yolo_backbones.hosts.yolov5.compat against the PyPI yolov5==7.0.14 host (offline, torch >= 2.6)."""
from __future__ import annotations

import os
import pickle
import socket
import subprocess
import sys
import textwrap
import time
import warnings
from copy import deepcopy
from datetime import datetime
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

import yolo_backbones
from yolo_backbones import ModelConfigError
import yolo_backbones.core.weights.safe_load as checkpoints
import yolo_backbones.hosts.yolov5.compat as compat

compat.apply_compat()

import yolov5.detect  # noqa: E402
import yolov5.export  # noqa: E402
import yolov5.train  # noqa: E402
import yolov5.utils.downloads as downloads  # noqa: E402
import yolov5.utils.general as general  # noqa: E402
import yolov5.utils.plots as plots  # noqa: E402
import yolov5.val  # noqa: E402
from yolov5.models.experimental import attempt_load  # noqa: E402
from yolov5.models.yolo import DetectionModel  # noqa: E402

PROJECT = Path(__file__).resolve().parents[1]
PIP_YOLOV5N = Path(general.ROOT) / "models" / "yolov5n.yaml"


# --- helpers ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def model() -> DetectionModel:
    return DetectionModel(str(PIP_YOLOV5N), ch=3, nc=80)


def save_training_checkpoint(model: DetectionModel, path: Path, best_fitness: object, **extra: object) -> Path:
    """Save a checkpoint the way yolov5/train.py does at the end of an epoch."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.937, nesterov=True)
    model.train()
    model(torch.zeros(1, 3, 64, 64))[0].sum().backward()
    optimizer.step()  # momentum buffers in the state
    for group in optimizer.param_groups:
        group["lr"] = np.interp(5, [0, 100], [0.1, 0.01])  # numpy float64, as in train.py's warmup
    ckpt = {"epoch": 0, "best_fitness": best_fitness, "model": deepcopy(model).half(), "ema": deepcopy(model).half(),
            "updates": 3, "optimizer": optimizer.state_dict(),
            "opt": {"weights": "", "cfg": str(PIP_YOLOV5N), "hyp": {"lr0": 0.01}, "epochs": 1, "freeze": [0],
                    "save_dir": "runs/train/exp", "resume": False},
            "date": datetime.now().isoformat(), "yolov5pip_version": "7.0.14", **extra}
    torch.save(ckpt, path)
    return path


class RunsShellCommand:
    """Unpickling this calls os.system (posix.system on Linux)."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


class RunsSubprocess:
    """Unpickling this calls subprocess.check_call."""

    def __init__(self, argv: list[str]) -> None:
        self.argv = argv

    def __reduce__(self):
        return subprocess.check_call, (self.argv,)


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make every download/connect path raise, and record the attempts."""
    calls: list[str] = []

    def refuse(name: str):
        def fail(*args, **kwargs):
            calls.append(name)
            raise AssertionError(f"network used: {name}{args[:1]}")
        return fail

    import requests
    import urllib.request

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse("torch.hub.download_url_to_file"))
    monkeypatch.setattr(urllib.request, "urlopen", refuse("urllib.request.urlopen"))
    monkeypatch.setattr(requests, "get", refuse("requests.get"))
    monkeypatch.setattr(requests, "head", refuse("requests.head"))
    monkeypatch.setattr(socket, "create_connection", refuse("socket.create_connection"))
    monkeypatch.setattr(downloads, "safe_download", refuse("safe_download"))
    monkeypatch.setattr(downloads, "curl_download", refuse("curl_download"))
    return calls


# --- checkpoints --------------------------------------------------------------------------------------

@pytest.mark.parametrize("best_fitness", [np.float64(0.25), np.array([0.25])], ids=["np.float64", "np.ndarray"])
def test_training_checkpoint_loads_through_attempt_load(model, tmp_path, best_fitness):
    path = save_training_checkpoint(model, tmp_path / "last.pt", best_fitness)

    loaded = attempt_load(str(path), device="cpu", fuse=True)

    assert type(loaded).__name__ == "DetectionModel"
    assert loaded.yaml["nc"] == 80
    with torch.no_grad():
        out = loaded(torch.zeros(1, 3, 64, 64))[0]
    assert out.shape == (1, 252, 85)
    # the raw torch.load calls in train.py / strip_optimizer go through the same safe path
    general.strip_optimizer(path)
    assert yolo_backbones.load_checkpoint(path, map_location="cpu")["optimizer"] is None
    # and weights_only was not switched off globally: torch.load itself is untouched
    assert torch.load.__module__ == "torch.serialization"


@pytest.mark.parametrize("payload", ["os.system", "subprocess.check_call"])
def test_pickle_with_foreign_global_is_refused_and_not_executed(tmp_path, payload):
    marker = tmp_path / "pwned"
    evil = (RunsShellCommand(f"touch {marker}") if payload == "os.system"
            else RunsSubprocess(["touch", str(marker)]))
    path = tmp_path / "evil.pt"
    torch.save({"model": evil, "epoch": 0}, path)

    with pytest.raises(checkpoints.UntrustedCheckpointError) as info:
        attempt_load(str(path), device="cpu")

    message = str(info.value)
    assert ("posix.system" if payload == "os.system" else ".check_call") in message  # (protocol 2 says commands.)
    assert checkpoints.TRUST_ENV in message and "Nothing from the file was executed" in message
    assert isinstance(info.value, pickle.UnpicklingError)
    assert not marker.exists()


def test_trust_env_var_loads_with_weights_only_false(model, tmp_path, monkeypatch):
    path = save_training_checkpoint(model, tmp_path / "trusted.pt", 0.5, extra=Fraction(1, 3))
    monkeypatch.delenv(checkpoints.TRUST_ENV, raising=False)
    with pytest.raises(checkpoints.UntrustedCheckpointError, match="fractions.Fraction"):
        attempt_load(str(path), device="cpu")

    monkeypatch.setenv(checkpoints.TRUST_ENV, "1")
    with pytest.warns(checkpoints.UnsafeCheckpointLoadWarning, match="weights_only=False"):
        loaded = attempt_load(str(path), device="cpu")
    assert type(loaded).__name__ == "DetectionModel"


class AllowedLater:
    """A plain class: no checkpoint object of it is ever restored, allowed or not."""

    def __init__(self, value: int) -> None:
        self.value = value


def test_objects_of_other_classes_are_refused_and_cannot_be_allowed(tmp_path):
    path = tmp_path / "extra.pt"
    torch.save({"thing": AllowedLater(7)}, path)
    with pytest.raises(checkpoints.UntrustedCheckpointError, match="AllowedLater"):
        general.torch.load(path, map_location="cpu")
    with pytest.raises(TypeError, match="nn.Module classes"):
        checkpoints.allow_classes(AllowedLater)


class DoubleConv(torch.nn.Module):
    """A user's own layer, named in a model YAML after allow_classes()."""

    def __init__(self, c1: int, c2: int) -> None:
        super().__init__()
        self.a, self.b = torch.nn.Conv2d(c1, c2, 3, padding=1), torch.nn.Conv2d(c2, c2, 3, padding=1)

    def forward(self, x):
        return self.b(self.a(x))


def test_allowed_user_layer_builds_from_yaml_and_its_checkpoint_rebuilds(tmp_path):
    import yaml

    cfg = yaml.safe_load(PIP_YOLOV5N.read_text())
    cfg["backbone"][1] = [-1, 1, "DoubleConv", [32]]  # a user layer in place of a Conv (c1 is inserted below)
    with pytest.raises(ModelConfigError, match="DoubleConv"):
        DetectionModel(deepcopy(cfg), ch=3)
    checkpoints.allow_classes(DoubleConv)
    cfg["backbone"][1] = [-1, 1, "DoubleConv", [16, 16]]  # YOLOv5 keeps the channel count for unknown layers
    model = DetectionModel(deepcopy(cfg), ch=3).eval()
    assert type(model.model[1]) is DoubleConv
    torch.save({"model": deepcopy(model).half(), "epoch": 1}, tmp_path / "custom.pt")
    loaded = attempt_load(str(tmp_path / "custom.pt"), device="cpu", fuse=False)
    assert type(loaded.model[1]) is DoubleConv
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x)[0], model.float()(x)[0], rtol=1e-2, atol=1e-2)  # fp16 weights


@pytest.mark.slow
def test_clone_checkpoint_is_rebuilt_with_the_pip_package(tmp_path):
    """A checkpoint a YOLOv5 clone wrote names models.yolo.DetectionModel; without a clone it is rebuilt with the
    PyPI package's class (no object of the file is used, only its YAML and tensors)."""
    path = tmp_path / "upstream_style.pt"
    script = f"""
        import sys, torch, yolov5  # puts site-packages/yolov5 on sys.path, as pip does
        from models.yolo import DetectionModel
        torch.manual_seed(0)
        m = DetectionModel({str(PIP_YOLOV5N)!r}, ch=3, nc=3).eval()
        torch.save({{"model": m, "epoch": 1}}, {str(path)!r})
        print(float(m(torch.ones(1, 3, 64, 64))[0].sum()))
    """
    env = {**os.environ, "YOLO_BACKBONES_NO_AUTOLOAD": "1"}
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], check=True, env=env, capture_output=True,
                         text=True)
    assert b"models.yolo" in path.read_bytes()

    model = general.torch.load(path, map_location="cpu")["model"]

    assert type(model) is DetectionModel and model.yaml["nc"] == 3
    with torch.no_grad():
        assert abs(float(model(torch.ones(1, 3, 64, 64))[0].sum()) - float(out.stdout.split()[-1])) < 1e-2


def test_standalone_host_layer_is_refused_in_one_line(tmp_path):
    from yolov5.models.common import Conv

    torch.save({"layer": Conv(3, 8)}, tmp_path / "layer.pt")
    with pytest.raises(checkpoints.UntrustedCheckpointError, match="saved without the model config") as info:
        general.torch.load(tmp_path / "layer.pt", map_location="cpu")
    assert "\n" not in str(info.value)


def test_fonts_are_never_downloaded_and_plotting_works(no_network, tmp_path, monkeypatch):
    monkeypatch.setattr(general, "CONFIG_DIR", tmp_path)  # no Arial.ttf anywhere

    general.check_font("Arial.ttf")
    general.check_font("Arial.Unicode.ttf", progress=True)
    font = plots.check_pil_font("Arial.ttf", size=20)
    width, height = font.getsize("person 0.87")
    annotator = plots.Annotator(np.zeros((96, 128, 3), dtype=np.uint8), pil=True, example="person")
    annotator.box_label([5, 30, 60, 80], "person 0.87")
    plots.plot_images(torch.zeros(2, 3, 64, 64), torch.tensor([[0, 0, 0.5, 0.5, 0.2, 0.2]]),
                      fname=tmp_path / "batch.jpg", names={0: "person"}).join()  # runs in a thread

    assert no_network == []
    assert width > 0 and height > 0
    assert np.asarray(annotator.result()).any()
    assert (tmp_path / "batch.jpg").stat().st_size > 0


def test_missing_weights_raise_clear_error_without_download(no_network, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    start = time.monotonic()
    with pytest.raises(FileNotFoundError) as info:
        downloads.attempt_download("yolov5s.pt")
    assert time.monotonic() - start < 2
    message = str(info.value)
    assert "yolov5s.pt" in message and "not present locally" in message and "nothing is downloaded" in message
    assert "--weights ''" in message
    assert no_network == []

    local = tmp_path / "mine.pt"
    local.write_bytes(b"x")
    assert downloads.attempt_download(str(local)) == str(local)


def test_hub_lookups_only_for_hub_ids(no_network, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("weights/best.pt", "yolov5s.pt", "", "runs/train/exp/weights/best.pt", str(tmp_path)):
        assert downloads.attempt_download_from_hub(name) is None
    # the names imported by name elsewhere are the patched function
    assert yolov5.train.attempt_download_from_hub is downloads.attempt_download_from_hub
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    with pytest.raises(FileNotFoundError, match="HF_HUB_OFFLINE"):
        downloads.attempt_download_from_hub("yolo-backbones-test/not-in-the-cache")
    assert no_network == []


def test_checks_do_not_touch_the_network_or_pip(no_network, monkeypatch):
    def no_subprocess(*args, **kwargs):
        raise AssertionError(f"subprocess used: {args[:1]}")

    monkeypatch.setattr(subprocess, "check_output", no_subprocess)
    monkeypatch.setattr(subprocess, "run", no_subprocess)
    start = time.monotonic()
    assert general.check_online() is False
    assert time.monotonic() - start < 0.5
    general.check_git_status()
    assert general.check_requirements("numpy>=1.18") is True
    assert general.check_requirements(("torch", "yolo-backbones-surely-not-installed>=1")) is False
    assert general.check_requirements() is True  # the pip package's own requirements
    assert yolov5.train.check_requirements is general.check_requirements
    assert general.check_amp(torch.nn.Conv2d(3, 3, 1)) is False  # CPU: no AMP, no yolov5n.pt
    assert downloads.is_url("https://example.com/a.pt") is False  # would need the network to check
    assert downloads.is_url("https://example.com/a.pt", check=False) is True
    assert no_network == []


def test_export_uses_the_torchscript_onnx_exporter(monkeypatch):
    seen = {}

    def fake_export(model, args, f, *, opset_version=None, dynamo=True):  # torch >= 2.9 signature, in short
        seen.update(opset_version=opset_version, dynamo=dynamo)

    monkeypatch.setattr(torch.onnx, "export", fake_export)
    yolov5.export.torch.onnx.export(None, None, "x.onnx", opset_version=12)
    assert seen == {"opset_version": 12, "dynamo": False}
    yolov5.export.torch.onnx.export(None, None, "x.onnx", dynamo=True)  # an explicit choice is kept
    assert seen["dynamo"] is True
    assert torch.onnx.export is fake_export  # torch itself is not patched


# --- YAML search ------------------------------------------------------------------------------------

def test_bare_yaml_names_are_found_in_the_project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    assert Path(general.check_yaml("coco8.yaml")).resolve() == PROJECT / "data" / "coco8.yaml"
    assert Path(yolov5.train.check_yaml("coco8.yaml")).resolve() == PROJECT / "data" / "coco8.yaml"
    assert Path(general.check_yaml("yolov5n.yaml")).resolve() == PIP_YOLOV5N.resolve()
    for module in (yolov5.train, yolov5.detect):
        assert module.check_file is general.check_file
    with pytest.raises(AssertionError, match="File not found: no-such-model.yaml"):
        general.check_yaml("no-such-model.yaml")


def test_project_dataset_yaml_resolves_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    data = yolov5.val.check_dataset("coco8.yaml")

    assert Path(data["val"]) == PROJECT / "data" / "coco8" / "images"
    assert Path(data["train"]).is_dir() and data["nc"] == 80 and data["names"][79] == "toothbrush"


# --- train defaults ------------------------------------------------------------------------------------

@pytest.mark.parametrize("argv, kwargs, expected", [
    (["train.py", "--cfg", "m.yaml"], {}, ""),
    (["train.py", "--cfg", "m.yaml", "--weights", "yolov5s.pt"], {}, "yolov5s.pt"),
    (["train.py", "--cfg=m.yaml", "--weig=my.pt"], {}, "my.pt"),
    (["train.py"], {"cfg": "m.yaml"}, ""),
    (["train.py"], {"cfg": "m.yaml", "weights": "yolov5s.pt"}, "yolov5s.pt"),
    (["train.py", "--data", "x.yaml"], {}, "yolov5s.pt"),
], ids=["cfg-cli", "explicit-weights", "abbreviated", "cfg-kwarg", "explicit-kwarg", "no-cfg"])
def test_cfg_without_weights_trains_from_scratch(monkeypatch, argv, kwargs, expected):
    monkeypatch.setattr(sys, "argv", argv)
    opt = yolov5.train.parse_opt(True)
    for key, value in kwargs.items():  # what train.run(**kwargs) does
        setattr(opt, key, value)
    opt.data = "no-such-dataset-for-this-test.yaml"  # main() stops at check_file, right after the decision

    with pytest.raises(AssertionError, match="File not found"):
        yolov5.train.main(opt)

    assert opt.weights == expected and type(opt.weights) is str


# --- idempotence and warnings --------------------------------------------------------------------------

def test_apply_compat_is_idempotent():
    def snapshot():
        modules = {name: dict(vars(m)) for name, m in list(sys.modules.items())
                   if m is not None and (name == "yolov5" or name.startswith(("yolov5.", "models.", "utils.")))}
        return ({n: {k: id(v) for k, v in d.items()} for n, d in modules.items()},
                len(torch.serialization.get_safe_globals()), len(warnings.filters),
                {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "YOLO_OFFLINE")})

    # once each way in this test's own warnings context (pytest resets the filters per test); with the host given,
    # the first call also imports the host's scripts (which tests run before this one may or may not have done)
    compat.apply_compat()
    compat.apply_compat(sys.modules["yolov5"])
    before = snapshot()
    compat.apply_compat()
    compat.apply_compat(sys.modules["yolov5"])
    assert snapshot() == before


@pytest.mark.slow
def test_only_the_pkg_resources_warning_is_silenced():
    script = """
        import warnings
        import yolo_backbones.hosts.yolov5.compat
        warnings.warn("some other warning", UserWarning)
        warnings.warn("pkg_resources is deprecated as an API. (test)", UserWarning)
        import yolov5.utils.general  # imports pkg_resources
    """
    env = {**os.environ, "YOLO_BACKBONES_NO_AUTOLOAD": "1"}
    result = subprocess.run([sys.executable, "-W", "default", "-c", textwrap.dedent(script)], env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "pkg_resources is deprecated" not in result.stderr
    assert "some other warning" in result.stderr
    assert "import pkg_resources" in (Path(general.__file__).read_text())  # the warning had a source
