"""Every entry point refuses malicious files before anything of them runs, and reports bad files in one line.

Each command runs in a fresh process, as a user would run it (an API, from a script that prints the error it
raises: a library call raises, it does not exit). A refused or unreadable file must make the
command exit with status 1, print one ``error: ...`` line (no traceback), and leave the gadget's marker file
absent (and a victim file intact). The attack classes of issues 9 and 20 rotate over the entry points of both
hosts, so every entry point meets several classes and every class several entry points; the in-process
variations of each class are in ``test_safe_load.py``.
"""
from __future__ import annotations

import copy
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Callable

import pytest
import torch

import gadgets
from gadgets import reconstruct, ref, write_checkpoint, write_file_dict, write_gadget, write_raw

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
COCO8 = ROOT / "data" / "coco8.yaml"
IMAGE = next((ROOT / "data" / "coco8" / "images").rglob("*.jpg"))
PY = sys.executable


def _api(code: str) -> list[str]:
    """``python -c`` running ``code`` (the file is ``sys.argv[1]``) the way a user's script would call an API: the
    exception it raises must be one of the project's user errors, whose one-line message is printed."""
    return [PY, "-c", "import sys\nfrom yolo_backbones.hosts.common.errors import one_line, user_error\ntry:\n"
            f"    {code}\nexcept Exception as e:\n    if user_error(e) is None:\n        raise\n"
            "    print(one_line(user_error(e)), file=sys.stderr)\n    sys.exit(1)\n"]


def _commands(weights: Path, out: Path) -> dict[str, list[str]]:
    common = ["--img", "64", "--device", "cpu"]
    w = str(weights)
    return {
        "detect.py": [PY, str(ROOT / "detect.py"), "--weights", w, "--source", str(IMAGE), "--project", str(out),
                      *common],
        "val.py": [PY, str(ROOT / "val.py"), "--weights", w, "--data", str(COCO8), "--project", str(out), *common],
        "export.py": [PY, str(ROOT / "export.py"), "--weights", w, "--include", "onnx", *common],
        "train.py --weights": [PY, str(ROOT / "train.py"), "--weights", w, "--cfg", "yolov5_edgevit.yaml",
                               "--epochs", "1", "--workers", "0", "--project", str(out), *common],
        "train.py --resume": [PY, str(ROOT / "train.py"), "--resume", w],
        "yolov5 detect (pip CLI)": [str(BIN / "yolov5"), "detect", "--weights", w, "--source", str(IMAGE),
                                    "--project", str(out), *common],
        "yolov5.load": [*_api("import yolov5; yolov5.load(sys.argv[1], device='cpu')"), w],
        "yolo-backbones val": [str(BIN / "yolo-backbones"), "val", "--weights", w, "--project", str(out), *common],
        "attempt_load": [*_api("import yolov5.models.experimental as e; e.attempt_load(sys.argv[1])"), w],
        "DetectMultiBackend": [*_api("import yolov5.models.common as c; c.DetectMultiBackend(sys.argv[1])"), w],
        "strip_optimizer (yolov5)": [*_api("import yolov5.utils.general as g; g.strip_optimizer(sys.argv[1])"), w],
        "load_checkpoint": [*_api("import yolo_backbones as y; y.load_checkpoint(sys.argv[1])"), w],
        "YOLO()": [*_api("from ultralytics import YOLO; YOLO(sys.argv[1])"), w],
        "yolo val": [str(BIN / "yolo"), "val", f"model={w}", f"data={COCO8}", "imgsz=64", "device=cpu",
                     f"project={out}"],
        "yolo predict": [str(BIN / "yolo"), "predict", f"model={w}", f"source={IMAGE}", "imgsz=64", "device=cpu",
                         f"project={out}"],
        "AutoBackend": [*_api("from ultralytics.nn.autobackend import AutoBackend; AutoBackend(sys.argv[1])"), w],
        "strip_optimizer (ultralytics)": [*_api("from ultralytics.utils.torch_utils import strip_optimizer; "
                                                "strip_optimizer(sys.argv[1])"), w],
    }


ENTRY_POINTS = list(_commands(Path("x"), Path("y")))


def _run(args: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    env.pop("YOLO_BACKBONES_TRUST_CHECKPOINTS", None)
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _assert_one_line_error(proc: subprocess.CompletedProcess, *expected: str) -> str:
    assert proc.returncode == 1, \
        f"exit {proc.returncode} after a bad file:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, proc.stderr[-3000:]
    for text in expected:
        assert text in errors[0], errors[0]
    return errors[0]


# ------------------------------------------------------------------------------------ genuine hosts' files
def _yolov5_model(nc: int = 80):
    import yaml
    import yolov5.models.yolo as yolo

    import yolo_backbones  # noqa: F401

    cfg = yaml.safe_load((Path(yolo.__file__).parent / "yolov5n.yaml").read_text())
    cfg["nc"] = nc
    torch.manual_seed(0)
    model = yolo.DetectionModel(cfg, ch=3)
    model.names = {i: f"class{i}" for i in range(nc)}
    return model


def _yolov5_checkpoint(model, **extra) -> dict:
    return {"epoch": -1, "best_fitness": None, "model": copy.deepcopy(model).half(), "ema": None, "updates": None,
            "optimizer": None, "opt": {"weights": "", "epochs": 1}, "date": "2026-01-01", **extra}


def _ultralytics_checkpoint():
    from ultralytics.nn.tasks import DetectionModel

    import yolo_backbones  # noqa: F401

    torch.manual_seed(0)
    model = DetectionModel("yolo11n.yaml", ch=3, nc=80, verbose=False)
    model.names = {i: f"class{i}" for i in range(80)}
    model.args = {"imgsz": 64, "task": "detect"}
    return {"epoch": -1, "model": None, "ema": copy.deepcopy(model).half(), "optimizer": None,
            "train_args": {"task": "detect", "imgsz": 64, "data": str(COCO8)}, "date": "2026-01-01"}


def _caller_at(module: torch.nn.Module, marker: Path, place: str) -> None:
    payload = (reconstruct(ref("ultralytics.data.augment.MixUp"), {"p": 1.0, "victim": str(marker)})
               if place == "forward" else gadgets._caller(marker))
    if place == "forward":
        module.__dict__["forward"] = payload
    else:
        module._forward_hooks[0] = payload


# Each builder writes the attack into `folder` and returns (file, marker or victim, expected text of the error).
def _v5_model_cfg(folder: Path) -> tuple[Path, Path, str]:
    path, marker = write_gadget("yolov5_pip_model_cfg", folder)
    return path, marker, "yolov5.models.yolo.Model"


def _os_system_in_ema(folder: Path) -> tuple[Path, Path, str]:
    path, marker = write_gadget("os_system", folder, nest_in="ema")
    return path, marker, "system"


def _forward_mixup(folder: Path) -> tuple[Path, Path, str]:
    marker = folder / "mixup.marker"
    model = _yolov5_model()
    _caller_at(model.model[2], marker, "forward")
    return write_checkpoint(folder / "mixup_forward.pt", _yolov5_checkpoint(model)), marker, "forward"


def _hook_in_ultralytics_model(folder: Path) -> tuple[Path, Path, str]:
    marker = folder / "hook.marker"
    ckpt = _ultralytics_checkpoint()
    _caller_at(ckpt["ema"].model[3], marker, "hook")
    return write_checkpoint(folder / "hook.pt", ckpt), marker, "_forward_hooks"


def _memo_mutation(folder: Path) -> tuple[Path, Path, str]:
    marker = folder / "memo.marker"
    return write_raw(folder / "memo.pt", gadgets.memo_mutation_program(marker)), marker, "_forward_hooks"


def _file_dict(folder: Path) -> tuple[Path, Path, str]:
    victim = folder / "victim.json"
    victim.write_text("precious")
    return write_file_dict(folder, victim, "jsondict"), victim, "ultralytics.utils.JSONDict"


def _yaml_names_a_function(folder: Path) -> tuple[Path, Path, str]:
    model = _yolov5_model()
    # stock YOLOv5 would call increment_path(<folder>/made_by_yaml, False, "", True): a folder the file chose
    model.yaml["backbone"][1] = [-1, 1, "increment_path", [str(folder / "made_by_yaml"), False, "", True]]
    return (write_checkpoint(folder / "yaml_call.pt", _yolov5_checkpoint(model)), folder / "made_by_yaml",
            "increment_path")


def _names_with_code(folder: Path) -> tuple[Path, Path, str]:
    marker = folder / "names.marker"
    model = _yolov5_model()
    model.names = f"__import__('os').system('touch {marker}')"
    return write_checkpoint(folder / "names_code.pt", _yolov5_checkpoint(model)), marker, "names"


def _stride_zero_buffer(folder: Path) -> tuple[Path, Path, str]:
    model = _yolov5_model()
    model.model[-1].register_buffer("anchors", torch.zeros(1, dtype=torch.float16).expand(1 << 15, 1 << 15, 2))
    return write_checkpoint(folder / "stride0.pt", _yolov5_checkpoint(model)), folder / "none", "MAX_EXPANDED_ELEMENTS"


def _nested_tuples(folder: Path) -> tuple[Path, Path, str]:
    return write_raw(folder / "tuples.pt", b"\x80\x02)" + b"\x85" * 200_000 + b"."), folder / "none", "MAX_TUPLE_DEPTH"


ATTACKS: dict[str, Callable[[Path], tuple[Path, Path, str]]] = {
    "yolov5 Model(cfg) call": _v5_model_cfg, "os.system in ema": _os_system_in_ema,
    "callable instance as forward": _forward_mixup, "hook in an ultralytics model": _hook_in_ultralytics_model,
    "hook dict filled through the memo": _memo_mutation, "JSONDict with a file path": _file_dict,
    "stored YAML names a function": _yaml_names_a_function, "class names that are code": _names_with_code,
    "stride-0 buffer of gigabytes": _stride_zero_buffer, "200 KB of nested tuples": _nested_tuples,
}
# every entry point meets one attack class in turn; with 17 entry points and 10 classes each class meets 1-2
CASES = [(entry, list(ATTACKS)[k % len(ATTACKS)]) for k, entry in enumerate(ENTRY_POINTS)]
CASES += [(entry, list(ATTACKS)[(k + 5) % len(ATTACKS)]) for k, entry in enumerate(ENTRY_POINTS) if k % 3 == 0]


@pytest.mark.parametrize("entry,attack", CASES)
def test_malicious_file_is_refused_by_every_entry_point(entry, attack, tmp_path):
    path, marker, expected = ATTACKS[attack](tmp_path)
    before = marker.read_text() if marker.is_file() else None
    proc = _run(_commands(path, tmp_path / "runs")[entry], cwd=tmp_path)
    _assert_one_line_error(proc, path.name, expected)
    assert (marker.read_text() if marker.is_file() else None) == before, f"{entry} let {attack} act"


@pytest.mark.parametrize("where", ["top", "nested", "jsondict"])
@pytest.mark.parametrize("entry", ["strip_optimizer (ultralytics)", "strip_optimizer (yolov5)"])
def test_strip_optimizer_never_writes_through_a_file_backed_dict(entry, where, tmp_path):
    """The second-round attack on strip_optimizer: the checkpoint is (or holds) a dict that saves itself to a victim
    path on item assignment. Refused in one line; the victim and the checkpoint stay as they were."""
    victim = tmp_path / "victim.json"
    victim.write_text("precious")
    path = write_file_dict(tmp_path, victim, where)
    before = path.read_bytes()
    proc = _run(_commands(path, tmp_path / "runs")[entry], cwd=tmp_path)
    _assert_one_line_error(proc, path.name)
    assert victim.read_text() == "precious" and path.read_bytes() == before


def test_callable_forward_in_a_yolo11_checkpoint_does_not_run_in_yolo_val(tmp_path):
    """The first attack of issue 20: a YOLO11 layer whose forward is ultralytics' MixUp, through `yolo val`."""
    marker = tmp_path / "val.marker"
    ckpt = _ultralytics_checkpoint()
    _caller_at(ckpt["ema"].model[2], marker, "forward")
    path = write_checkpoint(tmp_path / "yolo11_mixup.pt", ckpt)
    proc = _run(_commands(path, tmp_path / "runs")["yolo val"], cwd=tmp_path)
    _assert_one_line_error(proc, path.name, "forward")
    assert not marker.exists()


def test_pretrained_backbone_file_in_a_yaml_is_refused(tmp_path):
    path, marker = write_gadget("builtins_eval", tmp_path, nest_in="dict")
    cfg = tmp_path / "evil_backbone.yaml"
    text = (ROOT / "models" / "yolov5_edgevit.yaml").read_text()
    cfg.write_text(text.replace("[xxs, [1, 2, 3]]", f"[xxs, [1, 2, 3], '{path}']"))
    assert str(path) in cfg.read_text()
    proc = _run([PY, str(ROOT / "train.py"), "--cfg", str(cfg), "--epochs", "1", "--img", "64",
                 "--device", "cpu", "--workers", "0", "--project", str(tmp_path / "runs")], cwd=tmp_path)
    _assert_one_line_error(proc, "Refusing to load", "builtins.eval")
    assert not marker.exists()


# ------------------------------------------------------------------------------------ exported models
def _onnx_with_metadata(path: Path, names: str, stride: str = "32") -> Path:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["images"], ["output0"])], "g",
                              [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 64, 64])],
                              [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 3, 64, 64])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    for key, value in (("stride", stride), ("names", names)):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))
    return path


PAYLOADS = {
    "call": "__import__('os').system('touch {m}')",
    "dict with a call": "{{0: __import__('os').system('touch {m}')}}",
    "lambda": "(lambda: open('{m}', 'w'))()",
    "attribute walk": "().__class__.__base__.__subclasses__()",
}


@pytest.mark.parametrize("entry,payload", [("val.py", "call"), ("detect.py", "dict with a call"),
                                           ("yolo-backbones val", "lambda"), ("DetectMultiBackend", "attribute walk"),
                                           ("yolo predict", "call"), ("AutoBackend", "dict with a call")])
def test_exported_model_metadata_is_never_evaluated(entry, payload, tmp_path):
    marker = tmp_path / "onnx.marker"
    path = _onnx_with_metadata(tmp_path / "model.onnx", PAYLOADS[payload].format(m=marker))
    if entry in ("yolo predict", "AutoBackend"):  # ultralytics reads its own task metadata first
        import onnx

        model = onnx.load(str(path))
        entry_task = model.metadata_props.add()
        entry_task.key, entry_task.value = "task", "detect"
        onnx.save(model, str(path))
    proc = _run(_commands(path, tmp_path / "runs")[entry], cwd=tmp_path)
    _assert_one_line_error(proc, "model.onnx")
    assert not marker.exists()


def test_export_of_a_checkpoint_with_code_names_is_refused_before_exporting(tmp_path):
    path, marker, _ = _names_with_code(tmp_path)
    proc = _run(_commands(path, tmp_path / "runs")["export.py"], cwd=tmp_path)
    _assert_one_line_error(proc, path.name, "names")
    assert not marker.exists() and not path.with_suffix(".onnx").exists()


# ------------------------------------------------------------------------------- strings are not paths
def test_class_names_never_leave_the_crop_folder(tmp_path):
    """detect.py --save-crop makes a folder per class name: absolute or '..' names stay inside the run folder."""
    outside = tmp_path / "outside"
    model = _yolov5_model(nc=3)
    model.names = {0: str(outside / "abs"), 1: "../../../escaped", 2: "ok name"}
    path = write_checkpoint(tmp_path / "names.pt", _yolov5_checkpoint(model))
    proc = _run([PY, str(ROOT / "detect.py"), "--weights", str(path), "--source", str(IMAGE), "--img", "64",
                 "--device", "cpu", "--conf-thres", "0.0001", "--save-crop", "--project", str(tmp_path / "runs"),
                 "--name", "exp"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    crops = tmp_path / "runs" / "exp" / "crops"
    assert crops.is_dir() and any(crops.rglob("*.jpg")), proc.stdout[-2000:]
    made = {p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file()}
    assert all(str(p).startswith(("runs", "names.pt")) for p in made), sorted(map(str, made))[:10]
    assert not outside.exists() and not (tmp_path.parent / "escaped").exists()


def _host_optimizer(model: torch.nn.Module, host: str = "yolov5") -> torch.optim.Optimizer:
    """The three parameter groups the host's trainer makes (YOLOv5: biases, decayed weights, norm weights;
    ultralytics: decayed weights, norm weights, biases), with the scheduler's ``initial_lr``."""
    norms = tuple(v for k, v in torch.nn.__dict__.items() if "Norm" in k)
    groups: dict[str, list] = {"weight": [], "bn": [], "bias": []}
    for name, module in model.named_modules():
        for pname, p in module.named_parameters(recurse=False):
            key = "bias" if "bias" in f"{name}.{pname}" else "bn" if isinstance(module, norms) else "weight"
            groups[key].append(p)
    order = ("bias", "weight", "bn") if host == "yolov5" else ("weight", "bn", "bias")
    optimizer = torch.optim.SGD([{"params": groups[k], "weight_decay": 0.0005 if k == "weight" else 0.0}
                                 for k in order], lr=0.01, momentum=0.937, nesterov=True)
    for group in optimizer.param_groups:
        group["initial_lr"] = group["lr"]
    return optimizer


def _training_checkpoint(run_dir: Path, opt: dict) -> Path:
    model = _yolov5_model(nc=80)
    optimizer = _host_optimizer(model)
    weights = run_dir / "weights"
    weights.mkdir(parents=True)
    ckpt = {"epoch": 0, "best_fitness": 0.0, "model": copy.deepcopy(model).half(), "ema": copy.deepcopy(model).half(),
            "updates": 1, "optimizer": optimizer.state_dict(), "opt": opt, "date": "2026-01-01"}
    torch.save(ckpt, weights / "last.pt")
    return weights / "last.pt"


def test_resume_writes_only_into_the_checkpoint_run_folder(tmp_path):
    """--resume with an opt.yaml / checkpoint options that point save_dir elsewhere and ask for hyperparameter
    evolution with a shell-injecting bucket: the run continues in its own folder, nothing else is touched."""
    import yaml

    elsewhere, marker = tmp_path / "elsewhere", tmp_path / "bucket.marker"
    opt = {"weights": "", "cfg": "", "data": str(COCO8), "hyp": {"lr0": 0.01, "lrf": 0.01, "momentum": 0.937,
           "weight_decay": 0.0005, "warmup_epochs": 0.0, "warmup_momentum": 0.8, "warmup_bias_lr": 0.1, "box": 0.05,
           "cls": 0.5, "cls_pw": 1.0, "obj": 1.0, "obj_pw": 1.0, "iou_t": 0.2, "anchor_t": 4.0, "fl_gamma": 0.0,
           "hsv_h": 0.0, "hsv_s": 0.0, "hsv_v": 0.0, "degrees": 0.0, "translate": 0.0, "scale": 0.0, "shear": 0.0,
           "perspective": 0.0, "flipud": 0.0, "fliplr": 0.0, "mosaic": 0.0, "mixup": 0.0, "copy_paste": 0.0},
           "epochs": 2, "batch_size": 4, "imgsz": 64, "device": "cpu", "workers": 0, "noplots": True, "noval": False,
           "save_dir": str(elsewhere), "evolve": 2, "bucket": f"x; touch {marker}", "project": str(elsewhere),
           "name": "exp", "exist_ok": True}
    run_dir = tmp_path / "runs" / "exp"
    last = _training_checkpoint(run_dir, opt)
    (run_dir / "opt.yaml").write_text(yaml.safe_dump(opt))
    proc = _run([PY, str(ROOT / "train.py"), "--resume", str(last)], cwd=tmp_path, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert not elsewhere.exists() and not marker.exists()
    assert (run_dir / "results.csv").is_file() and (run_dir / "weights" / "best.pt").is_file()


def test_ultralytics_resume_writes_only_into_the_checkpoint_run_folder(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    ckpt = _ultralytics_checkpoint()
    model = ckpt["ema"].float()
    optimizer = _host_optimizer(model, "ultralytics")
    ckpt.update(epoch=0, best_fitness=0.0, optimizer=optimizer.state_dict(), updates=1, ema=model.half())
    ckpt["train_args"] = {"task": "detect", "mode": "train", "model": "yolo11n.yaml", "data": str(COCO8), "epochs": 2,
                          "imgsz": 64, "batch": 4, "device": "cpu", "workers": 0, "plots": False, "val": False,
                          "optimizer": "SGD",
                          "project": str(elsewhere), "name": "exp", "exist_ok": True, "save_dir": str(elsewhere)}
    weights = tmp_path / "runs" / "exp" / "weights"
    weights.mkdir(parents=True)
    torch.save(ckpt, weights / "last.pt")
    proc = _run([str(BIN / "yolo"), "train", "resume", f"model={weights / 'last.pt'}"], cwd=tmp_path, timeout=900)
    assert not elsewhere.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert (weights / "best.pt").is_file() or (weights / "last.pt").is_file()


# ----------------------------------------------------------------------------------------- bad files
def _bad_files(folder: Path) -> dict[str, Path]:
    """One file of each kind a user may pass by mistake."""
    import onnx
    from onnx import TensorProto, helper
    from PIL import Image
    from safetensors.torch import save_file

    files = {}
    files["empty"] = folder / "empty.pt"
    files["empty"].write_bytes(b"")
    genuine = folder / "genuine.pt"
    torch.save({"model": torch.nn.Conv2d(3, 8, 3), "epoch": 1}, genuine)
    data = genuine.read_bytes()
    files["truncated"] = folder / "truncated.pt"
    files["truncated"].write_bytes(data[: len(data) // 2])
    files["random"] = folder / "random.pt"
    files["random"].write_bytes(os.urandom(4096))
    files["directory"] = folder / "a_directory.pt"
    files["directory"].mkdir()
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    files["onnx"] = folder / "model_onnx.pt"
    onnx.save(helper.make_model(graph), str(files["onnx"]))
    files["safetensors"] = folder / "weights_st.pt"
    save_file({"w": torch.zeros(2)}, str(files["safetensors"]))
    files["yaml"] = folder / "config.pt"
    files["yaml"].write_text("nc: 80\nbackbone: []\n")
    files["image"] = folder / "picture.pt"
    Image.new("RGB", (8, 8)).save(files["image"], format="PNG")
    files["no model"] = folder / "list.pt"
    torch.save([1, 2, 3], files["no model"])
    return files


# Each kind reaches the loader by a different path (nothing to read, not a file, another format, no model inside);
# every other bad file is checked in process by test_safe_load.py::test_bad_file_gets_one_line, the command line
# only has to print its one line.
KINDS = ["empty", "directory", "onnx", "no model"]


@pytest.mark.parametrize("kind", KINDS)
def test_bad_file_gives_one_clear_line_from_val(kind, tmp_path):
    path = _bad_files(tmp_path)[kind]
    proc = _run(_commands(path, tmp_path / "runs")["val.py"], cwd=tmp_path)
    _assert_one_line_error(proc, path.name)


@pytest.mark.parametrize("entry,kind", [("detect.py", "truncated"), ("train.py --weights", "random"),
                                        ("yolov5.load", "truncated"), ("YOLO()", "no model"), ("yolo val", "random")])
def test_bad_files_give_one_line_from_other_entry_points(entry, kind, tmp_path):
    path = _bad_files(tmp_path)[kind]
    proc = _run(_commands(path, tmp_path / "runs")[entry], cwd=tmp_path)
    _assert_one_line_error(proc, path.name)


def test_zip_truncated_at_many_offsets_is_a_clear_error_in_process(tmp_path):
    from yolo_backbones import CheckpointFileError, load_checkpoint

    genuine = tmp_path / "genuine.pt"
    torch.save({"model": torch.nn.Conv2d(3, 8, 3)}, genuine)
    data = genuine.read_bytes()
    assert zipfile.is_zipfile(genuine)
    for cut in range(1, len(data), max(1, len(data) // 40)):
        part = tmp_path / "part.pt"
        part.write_bytes(data[:cut])
        with pytest.raises(CheckpointFileError) as info:
            load_checkpoint(part)
        assert "\n" not in str(info.value)
