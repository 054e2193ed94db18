"""The ultralytics host (YOLOv8 / YOLO11 / YOLO26): YAMLs, parse_model rows, scales, training, checkpoints,
fuse, export parity, offline behaviour, the `yolo` CLI through the import hook, COCO val, resume.

The end-to-end runs are subprocesses with every socket call blocked and logged (a sitecustomize.py in the
run's folder), at imgsz 64 on the embedded coco8 data, from a folder outside the checkout.
"""
from __future__ import annotations

import copy
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml

import yolo_backbones
from helpers import single_thread  # noqa: F401  (autouse fixture: one torch thread per test)
from yolo_backbones import ModelConfigError, Select
from yolo_backbones.core.base import Backbone
from yolo_backbones.resources import MODELS_DIR

tasks = pytest.importorskip("ultralytics.nn.tasks")
from ultralytics import YOLO  # noqa: E402

from yolo_backbones.hosts.ultralytics import OfflineError, patch_tasks_module  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
IMG = 64
YOLO11 = sorted(p.name for p in MODELS_DIR.glob("yolo11_*.yaml"))
ALL_YAMLS = YOLO11 + sorted(p.name for p in MODELS_DIR.glob("yolo26_*.yaml")) + sorted(
    p.name for p in MODELS_DIR.glob("yolov8_*.yaml"))
YOLOV5_SUFFIXES = sorted(p.name[len("yolov5_"):] for p in MODELS_DIR.glob("yolov5_*.yaml"))

_BLOCK_NETWORK = '''
import os, socket
def _blocked(*args, **kwargs):
    with open(os.environ["NETWORK_ATTEMPTS_LOG"], "a") as f:
        f.write(repr(args[:2]) + "\\n")
    raise OSError("network blocked by the test")
socket.getaddrinfo = socket.create_connection = _blocked
socket.socket.connect = socket.socket.connect_ex = _blocked
'''


def build(cfg: dict | str, **kw) -> torch.nn.Module:
    """A DetectionModel from a YAML name (project file) or a dict; quiet."""
    return tasks.DetectionModel(copy.deepcopy(cfg) if isinstance(cfg, dict) else tasks.yaml_model_load(cfg),
                                verbose=False, **kw)


def load_cfg(name: str = "yolo11_edgevit.yaml") -> dict:
    return tasks.yaml_model_load(name)


def offline_run(args: list[str], work: Path, timeout: int = 600,
                path: tuple[Path, ...] = ()) -> subprocess.CompletedProcess:
    """Run ``args`` in a fresh interpreter in ``work`` with sockets blocked; fail with its output unless it
    exits 0 without a single network attempt. The plugin is not imported explicitly: the .pth import hook does it.
    ultralytics gets a fresh settings folder (first-run code paths); ``path`` adds import folders."""
    site = work / "_noweb"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(_BLOCK_NETWORK)
    attempts = work / "network_attempts.log"
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "NETWORK_ATTEMPTS_LOG": str(attempts),
           "YOLO_CONFIG_DIR": str(work / "_config"),
           "PYTHONPATH": os.pathsep.join([str(site), *map(str, path), str(ROOT), os.environ.get("PYTHONPATH", "")])}
    env.pop("YOLO_OFFLINE", None)  # the plugin must set it itself
    proc = subprocess.run(args, cwd=work, env=env, capture_output=True, text=True, timeout=timeout)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{' '.join(args)} failed ({proc.returncode}):\n{out[-6000:]}"
    assert not attempts.exists(), f"network attempts: {attempts.read_text()}\n{out[-3000:]}"
    return proc


# ------------------------------------------------------------------------------------------ installation
def test_plugin_is_installed_into_tasks() -> None:
    assert tasks.EdgeViT is yolo_backbones.core.registry.backbone_classes()["EdgeViT"]
    assert tasks.Select is Select
    assert patch_tasks_module(tasks) is False, "second patch must be a no-op"
    assert yolo_backbones.install() == []


def test_yaml_set_mirrors_the_yolov5_set() -> None:
    assert [n[len("yolo11_"):] for n in YOLO11] == YOLOV5_SUFFIXES
    for family in ("yolo26", "yolov8"):
        assert {f"{family}_{b}.yaml" for b in ("edgevit", "mobileformer", "efficientformer")} <= set(ALL_YAMLS)


# --------------------------------------------------------------------------------------- building, shapes
@pytest.mark.slow
@pytest.mark.parametrize("name", ALL_YAMLS)
def test_every_yaml_builds_and_outputs_the_right_shapes(name) -> None:
    torch.manual_seed(0)
    model = build(name)
    backbone = model.model[0]
    assert isinstance(backbone, Backbone) and model.stride.tolist() == [8.0, 16.0, 32.0]
    assert [m.index for m in model.model[1:4]] == [0, 1, 2]  # Select rows became ultralytics' Index
    assert type(model.model[1]).__name__ == "Index"
    h, w = 64, 96
    x = torch.rand(2, 3, h, w)
    cells = sum((h // s) * (w // s) for s in (8, 16, 32))
    model.eval()
    with torch.no_grad():
        y = model(x)
    pred = y[0] if isinstance(y, (tuple, list)) else y
    assert tuple(pred.shape) == (2, 84, cells)
    model.train()
    out = model(x)  # training mode: a dict holding the per-level maps ("one2many" nests it for end-to-end heads)
    out = out.get("one2many", out) if isinstance(out, dict) else out
    feats = out["feats"] if isinstance(out, dict) else out
    assert [tuple(f.shape[2:]) for f in feats] == [(h // s, w // s) for s in (8, 16, 32)]


def test_select_channels_come_from_the_backbone() -> None:
    model = build("yolo11s_edgevit.yaml")
    backbone, sppf = model.model[0], model.model[4]
    assert backbone.out_channels == [72, 144, 288]
    assert sppf.cv1.conv.in_channels == 288  # SPPF on the selected P5
    assert model.model[8].cv1.conv.in_channels == 512 + 144  # C2PSA-upsampled P5 (x0.5 of 1024) + P4
    assert model.model[11].cv1.conv.in_channels == 256 + 72
    assert 0 in model.save


def test_scale_letter_and_default_scale() -> None:
    d = load_cfg("yolo11_efficientformer.yaml")
    assert d["scale"] == "" and d["default_scale"] == "s"
    default, small, nano = build(d), build("yolo11s_efficientformer.yaml"), build("yolo11n_efficientformer.yaml")
    assert default.model[4].cv2.conv.out_channels == small.model[4].cv2.conv.out_channels == 512
    assert nano.model[4].cv2.conv.out_channels == 256


def test_scales_change_the_neck_only() -> None:
    torch.manual_seed(0)
    nano, small = build("yolo11n_mobileformer.yaml"), build("yolo11s_mobileformer.yaml")
    n_sd, s_sd = nano.model[0].state_dict(), small.model[0].state_dict()
    assert {k: v.shape for k, v in n_sd.items()} == {k: v.shape for k, v in s_sd.items()}
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(nano.model[0]) == count(small.model[0])
    assert count(nano) < count(small)


def test_channels_of_the_model_reach_the_backbone() -> None:
    model = build("yolo11_edgevit.yaml", ch=1)
    assert model.model[0].in_chans == 1
    model.eval()
    with torch.no_grad():
        assert model(torch.rand(1, 1, 64, 64))[0].shape == (1, 84, 84)


# --------------------------------------------------------------------------------------------- bad rows
def _cfg_with(rows: list, name: str = "yolo11_edgevit.yaml") -> dict:
    """The model dict of ``name`` with its first backbone rows replaced by ``rows``."""
    cfg = load_cfg(name)
    cfg["backbone"] = rows + cfg["backbone"][len(rows):]
    return cfg


EDGEVIT = [-1, 1, "EdgeViT", ["xxs", [1, 2, 3]]]


def test_explicit_index_with_the_right_channels_builds() -> None:
    model = build(_cfg_with([EDGEVIT, [0, 1, "Index", [72, 0]], [0, 1, "Index", [144, 1]], [0, 1, "Index", [288, 2]]]))
    assert model.model[4].cv1.conv.in_channels == 288


def test_explicit_index_with_wrong_channels_states_the_right_count() -> None:
    rows = [EDGEVIT, [0, 1, "Index", [72, 0]], [0, 1, "Index", [128, 1]]]
    with pytest.raises(ModelConfigError, match=r"layer 2: Index \[128, 1\] picks map 1 of layer 0 \(EdgeViT\), "
                                               r"which has 144 channels, not 128; write \[0, 1, Index, \[144, 1\]\]"):
        build(_cfg_with(rows))


def test_select_index_out_of_range_names_the_valid_range() -> None:
    rows = [EDGEVIT, [0, 1, "Select", [0]], [0, 1, "Select", [1]], [0, 1, "Select", [3]]]
    with pytest.raises(ModelConfigError, match=r"layer 3: Select index 3 is out of range.*returns 3 maps.*0\.\.2"):
        build(_cfg_with(rows))


def test_layer_fed_a_list_without_select_is_rejected() -> None:
    rows = [EDGEVIT, [0, 1, "Select", [0]], [0, 1, "Select", [1]], [0, 1, "Conv", [256, 1, 1]]]
    with pytest.raises(ModelConfigError, match=r"layer 3 \(Conv\) is fed layer 0, which returns a list.*"
                                               r"\[0, 1, Select, \[0\]\]"):
        build(_cfg_with(rows))


def test_select_fed_a_tensor_is_rejected() -> None:
    rows = [EDGEVIT, [0, 1, "Select", [0]], [-1, 1, "Select", [0]]]
    with pytest.raises(ModelConfigError, match=r"layer 2: Select is fed layer -1, which returns a single tensor"):
        build(_cfg_with(rows))


def test_backbone_rows_need_n_1_and_the_first_row() -> None:
    with pytest.raises(ModelConfigError, match=r"backbone row must have n=1"):
        build(_cfg_with([[-1, 2, "EdgeViT", ["xxs", [1, 2, 3]]]]))
    cfg = load_cfg()
    cfg["backbone"] = [[-1, 1, "Conv", [16, 3, 1]], [-1, 1, "EdgeViT", ["xxs", [1, 2, 3]]]] + cfg["backbone"][1:]
    with pytest.raises(ModelConfigError, match=r"layer 1: EdgeViT must be the first row"):
        build(cfg)


def test_unknown_names_and_variants_say_what_exists() -> None:
    with pytest.raises(ModelConfigError, match=r"unknown module 'EdgeVit'.*Did you mean EdgeViT"):
        build(_cfg_with([[-1, 1, "EdgeVit", ["xxs", [1, 2, 3]]]]))
    with pytest.raises(ModelConfigError, match=r"layer 0 .*unknown MobileFormer variant '295m'"):
        build(_cfg_with([[-1, 1, "MobileFormer", ["295m", [1, 2, 3]]]], name="yolo11_mobileformer.yaml"))


def test_yaml_cannot_call_functions_or_eval_code() -> None:
    """A model dict (also the one stored in a checkpoint) may only name torch.nn.Module classes."""
    rows = [EDGEVIT, [0, 1, "torch_safe_load", ["evil.pt"]]]
    with pytest.raises(ModelConfigError, match=r"'torch_safe_load' is not a model layer"):
        build(_cfg_with(rows))
    cfg = load_cfg()
    cfg["activation"] = "__import__('os').system('echo pwned')"
    with pytest.raises(ModelConfigError, match=r"activation .*torch.nn activation"):
        build(cfg)
    cfg["activation"] = "nn.LeakyReLU(0.1)"
    model = build(cfg)
    assert isinstance(model.model[4].cv1.act, torch.nn.LeakyReLU) and model.model[4].cv1.act.negative_slope == 0.1


# ------------------------------------------------------------------------------------------------ training
@pytest.mark.slow
@pytest.mark.parametrize("name", ["yolo11_edgevit.yaml", "yolo26_edgevit.yaml", "yolov8_edgevit.yaml"])
def test_one_training_step_reaches_every_parameter(name) -> None:
    from ultralytics.cfg import get_cfg

    torch.manual_seed(0)
    cfg = load_cfg(name)
    cfg["nc"] = 2
    model = build(cfg).train()
    model.args = get_cfg()
    batch = {"img": torch.rand(2, 3, IMG, IMG), "batch_idx": torch.tensor([0.0, 1.0, 1.0]),
             "cls": torch.tensor([[0.0], [1.0], [0.0]]),
             "bboxes": torch.tensor([[0.5, 0.5, 0.4, 0.3], [0.3, 0.6, 0.2, 0.5], [0.7, 0.3, 0.3, 0.2]])}
    loss, _ = model.loss(batch)
    loss.sum().backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing
    assert all(torch.isfinite(p.grad).all() for p in model.model[0].parameters())


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """`yolo train` of the CLI (plugin found through the import hook), offline, 1 epoch: its best.pt."""
    yolo = Path(sys.executable).parent / "yolo"
    if not yolo.exists():
        pytest.skip("no `yolo` console script next to this interpreter")
    work = tmp_path_factory.mktemp("yolo_cli")
    proc = offline_run([str(yolo), "train", "model=yolo11_edgevit.yaml", "data=coco8.yaml", "epochs=1", f"imgsz={IMG}",
                        "batch=4", "device=cpu", "workers=0", f"project={work / 'runs'}", "name=cli"], work)
    best = work / "runs" / "cli" / "weights" / "best.pt"
    assert best.is_file(), proc.stdout[-3000:]
    return best


@pytest.mark.slow
def test_cli_train_offline_through_the_import_hook(trained) -> None:
    assert trained.stat().st_size > 1e6


@pytest.mark.slow
def test_python_api_train_offline_and_resume(tmp_path) -> None:
    """YOLO(yaml).train(...) interrupted after epoch 1, then YOLO(last.pt).train(resume=True) to the end."""
    script = tmp_path / "train_resume.py"
    script.write_text(textwrap.dedent(f"""
        from ultralytics import YOLO

        class Interrupt(Exception):
            pass

        def interrupt(trainer):
            raise Interrupt

        model = YOLO("yolo11_edgevit.yaml")
        model.add_callback("on_model_save", interrupt)
        try:
            model.train(data="coco8.yaml", epochs=2, imgsz={IMG}, batch=4, device="cpu", workers=0, plots=False,
                        project={str(tmp_path / "runs")!r}, name="api")
        except Interrupt:
            pass
        else:
            raise SystemExit("not interrupted")
        YOLO({str(tmp_path / "runs" / "api" / "weights" / "last.pt")!r}).train(resume=True)
    """))
    proc = offline_run([sys.executable, str(script)], tmp_path)
    out = proc.stdout + proc.stderr
    assert "Resuming training" in out and "from epoch 2 to 2 total epochs" in out, out[-3000:]
    assert (tmp_path / "runs" / "api" / "weights" / "best.pt").is_file()


@pytest.mark.slow
def test_ddp_rank_script_finds_the_plugin(tmp_path) -> None:
    """ultralytics starts each DDP rank from a generated script that unpickles the trainer with its own
    torch_load: that load must stay ultralytics' and the rank interpreter must get the plugin from the hook.
    Run here as one CPU process (no GPUs); plain pickle stands in for cloudpickle, which is not installed."""
    stub = tmp_path / "_stub"
    stub.mkdir()
    (stub / "cloudpickle.py").write_text("from pickle import *  # noqa\nfrom pickle import Pickler, Unpickler\n")
    script = tmp_path / "ddp.py"
    script.write_text(textwrap.dedent(f"""
        import subprocess, sys
        from pathlib import Path
        from ultralytics.models.yolo.detect import DetectionTrainer
        from ultralytics.utils.dist import generate_ddp_file

        trainer = DetectionTrainer(overrides=dict(model="yolo11_edgevit.yaml", data="coco8.yaml", epochs=1,
                                                  imgsz={IMG}, batch=4, device="cpu", workers=0, plots=False,
                                                  project={str(tmp_path / "runs")!r}, name="ddp"))
        trainer.callbacks = {{k: [f for f in v if f.__name__ != "<lambda>"] for k, v in trainer.callbacks.items()}}
        rank = Path(generate_ddp_file(trainer))
        try:
            subprocess.run([sys.executable, str(rank)], check=True)
        finally:
            rank.unlink(missing_ok=True)
            rank.with_suffix(".pt").unlink(missing_ok=True)
    """))
    offline_run([sys.executable, str(script)], tmp_path, path=(stub,))
    assert (tmp_path / "runs" / "ddp" / "weights" / "best.pt").is_file()


# ------------------------------------------------------------------------------- checkpoints, fuse, export
def _trusted_load(path: Path) -> torch.nn.Module:
    """The checkpoint's model read with plain torch.load (a file the test wrote itself)."""
    return torch.load(path, map_location="cpu", weights_only=False)["model"].float().eval()


@pytest.mark.slow
def test_checkpoint_round_trip_through_the_safe_loader(trained) -> None:
    assert getattr(tasks.torch_load, "__module__", "").startswith("yolo_backbones.")
    model = YOLO(str(trained)).model.eval()
    reference = _trusted_load(trained)
    x = torch.rand(2, 3, IMG, IMG)
    with torch.no_grad():
        torch.testing.assert_close(model(x)[0], reference(x)[0], rtol=0, atol=0)


def test_refused_checkpoint_reports_the_loaders_error(tmp_path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"model": os.getcwd}, path)  # a callable global: never allowed
    with pytest.raises(yolo_backbones.core.weights.safe_load.UntrustedCheckpointError, match="getcwd"):
        YOLO(str(path))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["yolo11_edgevit.yaml", "yolo11_mobileformer.yaml", "yolo11_efficientformerv2_s0.yaml"])
def test_fuse_is_exact(name) -> None:
    torch.manual_seed(0)
    model = build(name).eval()
    for m in model.modules():  # non-trivial BN statistics, as after training
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    x = torch.rand(2, 3, IMG, IMG)
    norms = lambda: sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.model[0].modules())  # noqa: E731
    before = norms()
    with torch.no_grad():
        expected = model(x)[0]
        assert not model.is_fused()
        model.fuse(verbose=False)
        assert model.is_fused() and model.model[0].fused and norms() < before  # the backbone was folded too
        torch.testing.assert_close(model(x)[0], expected, rtol=0, atol=1e-4)


@pytest.mark.slow
def test_onnx_and_torchscript_exports_match(trained, tmp_path) -> None:
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    weights = tmp_path / "best.pt"
    weights.write_bytes(trained.read_bytes())
    fused = _trusted_load(weights).fuse(verbose=False)
    x = torch.rand(1, 3, IMG, IMG)
    with torch.no_grad():
        expected = fused(x)[0].numpy()
    onnx_file = YOLO(str(weights)).export(format="onnx", imgsz=IMG)  # onnxslim is not installed: never pip-installed
    session = ort.InferenceSession(onnx_file, providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    assert got.shape == expected.shape and abs(got - expected).max() < 1e-4
    script = torch.jit.load(YOLO(str(weights)).export(format="torchscript", imgsz=IMG))
    with torch.no_grad():
        got = script(x)
    got = (got[0] if isinstance(got, (tuple, list)) else got).numpy()
    assert abs(got - expected).max() < 1e-4


# ---------------------------------------------------------------------------------------------- val, offline
@pytest.mark.slow
def test_val_reports_pycocotools_map_for_a_coco_json_dataset(trained, tmp_path, caplog) -> None:
    metrics = YOLO(str(trained)).val(data="coco8.yaml", imgsz=IMG, batch=8, conf=0.0, device="cpu", plots=False,
                                     project=str(tmp_path), name="val")
    coco = metrics.coco_stats
    assert set(coco) >= {"AP", "AP50", "AP75", "APs", "APm", "APl", "AR100"}
    assert all(0.0 <= v <= 1.0 for v in coco.values())
    predictions = yaml.safe_load((tmp_path / "val" / "predictions.json").read_text())
    assert predictions and {p["image_id"] for p in predictions} <= {9, 25, 30, 36, 49, 61, 71, 74}


@pytest.mark.slow
def test_predict(trained, tmp_path) -> None:
    results = YOLO(str(trained)).predict(ROOT / "data" / "coco8" / "images" / "000000000009.jpg", imgsz=IMG, conf=0.0,
                                         device="cpu", save=True, project=str(tmp_path), name="predict")
    assert len(results) == 1 and results[0].boxes.xyxy.shape[1] == 4
    assert (tmp_path / "predict" / "000000000009.jpg").is_file()  # drawn with PIL's font: none is downloaded


def test_missing_weights_fail_in_one_line_without_download(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(OfflineError, match=r"yolo26n\.pt: not found locally .* not downloaded") as info:
        YOLO("yolo26n.pt")
    assert "\n" not in str(info.value)
    assert isinstance(info.value, ConnectionError), "ultralytics' AMP check treats ConnectionError as offline"


def test_no_pip_install_and_no_online_checks(monkeypatch) -> None:
    from ultralytics.utils import checks, downloads

    def no_subprocess(*args, **kwargs):
        raise AssertionError(f"subprocess started: {args}")

    monkeypatch.setattr(checks.subprocess, "check_output", no_subprocess)
    monkeypatch.setattr(checks.subprocess, "run", no_subprocess)
    assert checks.check_requirements("surely-not-installed-package-xyz>=1.0") is False
    assert downloads.is_url("https://ultralytics.com/assets/Arial.ttf", check=True) is False
    assert downloads.get_github_assets() == ("", [])
    with pytest.raises(OfflineError):
        downloads.safe_download("https://ultralytics.com/assets/Arial.ttf", file="Arial.ttf")
    font = checks.check_font("surely-missing-font.ttf")
    assert font is None or Path(font).is_file()


class _OnCuda:
    """Stands in for a parameter: check_amp only reads its device."""

    device = torch.device("cuda", 0)


def test_amp_check_on_a_gpu_skips_the_reference_download(monkeypatch) -> None:
    """On CUDA ultralytics compares against yolo26n.pt, downloading it first; offline the check is skipped."""
    from ultralytics.utils import checks

    model = torch.nn.Linear(1, 1)
    monkeypatch.setattr(model, "parameters", lambda recurse=True: iter([_OnCuda()]))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA A100")
    assert checks.check_amp(model) is True  # ultralytics' own "offline: checks skipped", AMP stays on


def test_bare_names_resolve_to_the_project_first(tmp_path, monkeypatch) -> None:
    from ultralytics.data.utils import check_det_dataset
    from ultralytics.utils.checks import check_yaml

    monkeypatch.chdir(tmp_path)
    assert Path(check_yaml("coco8.yaml")) == ROOT / "data" / "coco8.yaml"
    assert Path(check_yaml("yolo26_edgevit.yaml")) == MODELS_DIR / "yolo26_edgevit.yaml"
    data = check_det_dataset("coco8.yaml")
    assert Path(data["val"]) == ROOT / "data" / "coco8" / "images" and data["nc"] == 80
