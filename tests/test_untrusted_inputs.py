"""Host models rebuilt from a checkpoint's YAML and tensors; YAML rows resolve to layer classes only; names, strides,
metadata and run settings from files are checked data. In-process and fast (the entry-point versions of these
attacks are in ``test_entry_points_safety.py``)."""
from __future__ import annotations

import argparse
import copy
from pathlib import Path

import pytest
import torch
import yaml
from gadgets import write_checkpoint

import yolo_backbones
from yolo_backbones import CheckpointFileError, ModelConfigError, UntrustedCheckpointError, load_checkpoint
from yolo_backbones.core.weights.metadata import MetadataError, check_names, check_stride, safe_class_name

yolo = pytest.importorskip("yolov5.models.yolo")
YOLOV5N = Path(yolo.__file__).parent / "yolov5n.yaml"


def _v5(nc: int = 4, cfg: dict | None = None) -> torch.nn.Module:
    cfg = cfg or yaml.safe_load(YOLOV5N.read_text())
    cfg["nc"] = nc
    torch.manual_seed(0)
    return yolo.DetectionModel(copy.deepcopy(cfg), ch=3)


@pytest.fixture(scope="module")
def v5() -> torch.nn.Module:
    model = _v5()
    model.names = {0: "person", 1: "traffic light", 2: "a/b", 3: ".."}
    model.hyp = {"lr0": 0.01, "anchors": 3.0}
    return model


# --------------------------------------------------------------------------------------- rebuilt models
@pytest.mark.parametrize("fused", [False, True])
def test_yolov5_model_is_rebuilt_from_its_yaml_and_tensors(v5, fused, tmp_path):
    model = copy.deepcopy(v5).eval()
    if fused:
        model.fuse()
    torch.save({"model": copy.deepcopy(model).half(), "epoch": 3}, tmp_path / "m.pt")
    out = load_checkpoint(tmp_path / "m.pt")["model"]
    assert type(out) is type(v5) and out is not model and next(out.parameters()).dtype == torch.float16
    assert out.names == {0: "person", 1: "traffic light", 2: "a_b", 3: "_"}  # file-name safe
    assert out.hyp == v5.hyp and out.yaml == v5.yaml and torch.equal(out.stride, v5.stride)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(out.float().eval()(x)[0], model.half().float()(x)[0])  # the file holds fp16 weights


def test_yolov5_model_and_ema_share_nothing(v5, tmp_path):
    torch.save({"model": copy.deepcopy(v5).half(), "ema": copy.deepcopy(v5).half(), "updates": 2}, tmp_path / "t.pt")
    ckpt = load_checkpoint(tmp_path / "t.pt")
    a, b = ckpt["model"], ckpt["ema"]
    assert a is not b and all(p.data_ptr() != q.data_ptr() for p, q in zip(a.parameters(), b.parameters()))


def test_record_tree_must_match_the_rebuilt_model(v5, tmp_path):
    model = copy.deepcopy(v5)
    model.model[3].add_module("extra", torch.nn.Conv2d(1, 1, 1))  # a layer the YAML does not build
    torch.save({"model": model}, tmp_path / "extra.pt")
    with pytest.raises(CheckpointFileError, match=r"layer 'model\.3\.extra': the file has Conv2d, its config builds "
                                                  "nothing"):
        load_checkpoint(tmp_path / "extra.pt")
    model = copy.deepcopy(v5)
    model.yaml = dict(model.yaml, nc=5)  # the config no longer fits the tensors
    torch.save({"model": model}, tmp_path / "nc.pt")
    with pytest.raises(CheckpointFileError, match="do not fit the model its config builds"):
        load_checkpoint(tmp_path / "nc.pt")


@pytest.mark.parametrize("name,value", [("names", 7), ("names", {0: b"x"}), ("nc", "4"), ("hyp", {"lr0": [object]})])
def test_plain_attributes_are_type_checked(v5, name, value, tmp_path):
    model = copy.deepcopy(v5)
    if value == {"lr0": [object]}:
        value = {"lr0": [1 + 2j]}  # complex: not plain data
    setattr(model, name, value)
    torch.save({"model": model}, tmp_path / "attr.pt")
    with pytest.raises(UntrustedCheckpointError, match=name):
        load_checkpoint(tmp_path / "attr.pt")


# ------------------------------------------------------------------------- YAML rows: layer classes only
CALLS = ["increment_path", "check_yaml", "eval", "__import__", "print_args", "make_divisible", "os.system", "Path"]


@pytest.mark.parametrize("name", CALLS)
def test_yolov5_rows_resolve_to_layer_classes_only(name):
    cfg = yaml.safe_load(YOLOV5N.read_text())
    cfg["backbone"][1] = [-1, 1, name, ["/tmp/should_not_exist", False, "", True]]
    with pytest.raises(ModelConfigError, match=r"layer 1: .*" + name.split(".")[-1]):
        _v5(cfg=cfg)
    assert not Path("/tmp/should_not_exist").exists()


def test_a_checkpoint_whose_yaml_names_a_function_is_refused_naming_the_row(v5, tmp_path):
    model = copy.deepcopy(v5)
    model.yaml["backbone"][2] = [-1, 1, "increment_path", [str(tmp_path / "made"), False, "", True]]
    torch.save({"model": model}, tmp_path / "call.pt")
    with pytest.raises(CheckpointFileError, match=r"layer 2: 'increment_path' is not a model layer"):
        load_checkpoint(tmp_path / "call.pt")
    assert not (tmp_path / "made").exists()


def test_stored_activation_applies_to_its_model_only(v5, tmp_path):
    conv = yolo.__dict__["Conv"]
    before = conv.default_act
    model = copy.deepcopy(v5)
    model.yaml["activation"] = "nn.ReLU()"
    torch.save({"model": model}, tmp_path / "act.pt")
    with pytest.raises(CheckpointFileError):  # the SiLU tensors do not match a ReLU config: structure differs
        load_checkpoint(tmp_path / "act.pt")
    assert conv.default_act is before
    model.yaml["activation"] = "__import__('os').system('true')"
    torch.save({"model": model}, tmp_path / "act_code.pt")
    with pytest.raises(CheckpointFileError, match="activation"):
        load_checkpoint(tmp_path / "act_code.pt")


def test_backbone_weights_named_by_a_stored_yaml_are_not_read(tmp_path):
    """A checkpoint's YAML may name a weights file or hub name for its backbone row: the weights are the file's."""
    cfg = yaml.safe_load((Path(yolo_backbones.__file__).parents[1] / "models" / "yolov5_edgevit.yaml").read_text())
    model = _v5(nc=80, cfg=cfg)
    model.yaml["backbone"][0][3] = ["xxs", [1, 2, 3], str(tmp_path / "missing_weights.pth")]
    torch.save({"model": model}, tmp_path / "bb.pt")
    out = load_checkpoint(tmp_path / "bb.pt")["model"]  # nothing read: the missing file is no error
    assert all(torch.equal(a, b) for a, b in zip(out.state_dict().values(), model.state_dict().values()))


# ----------------------------------------------------------------------------- names, strides, metadata
@pytest.mark.parametrize("name,safe", [("person", "person"), ("traffic light", "traffic light"),
                                       ("/etc/cron.d", "_etc_cron.d"), ("../../x", ".._.._x"), ("..", "_"), (".", "_"),
                                       ("", "_"), ("a\x00b", "a_b"), ("c:\\win", "c__win")])
def test_class_names_become_safe_file_name_components(name, safe):
    assert safe_class_name(name) == safe
    assert "/" not in safe and "\\" not in safe and safe not in (".", "..")


@pytest.mark.parametrize("names,expected", [(["a", "b"], ["a", "b"]), ({0: "a", 1: "b"}, {0: "a", 1: "b"}),
                                            ({"0": "a"}, {0: "a"}), ("{0: 'a', 1: 'b/c'}", {0: "a", 1: "b_c"}),
                                            ('["x"]', ["x"])])
def test_names_from_files_are_lists_or_dicts_of_strings(names, expected):
    assert check_names(names, "f") == expected


@pytest.mark.parametrize("names", [7, None, {0: 1}, {-1: "a"}, ["a", 2], "__import__('os').system('true')",
                                   "{0: __import__('os')}", "x" * 5_000_000])
def test_names_that_are_not_names_are_refused(names):
    with pytest.raises(MetadataError) as info:
        check_names(names, "model.onnx")
    assert str(info.value).startswith("model.onnx: ") and "\n" not in str(info.value)


@pytest.mark.parametrize("stride,ok", [(32, 32), ("32", 32), (32.0, 32), ("1e9", None), ("x", None), (0, None),
                                       (True, 1), (7.5, None)])
def test_stride_is_a_small_integer(stride, ok):
    if ok is None:
        with pytest.raises(MetadataError):
            check_stride(stride, "f")
    else:
        assert check_stride(stride, "f") == ok


def test_ultralytics_metadata_keeps_known_keys_checked():
    pytest.importorskip("ultralytics")
    from yolo_backbones.hosts.ultralytics.exported import check_metadata

    meta = check_metadata({"stride": "32", "names": "{0: 'a/b'}", "imgsz": "[64, 64]", "batch": "1", "task": "detect",
                           "args": "{'nms': False}", "forward": "x", "load_model": "y", "__class__": "z"}, "m.onnx")
    assert meta == {"stride": 32, "names": {0: "a_b"}, "imgsz": [64, 64], "batch": 1, "task": "detect",
                    "args": {"nms": False}}
    for bad in ({"names": "__import__('os')"}, {"imgsz": "[-1]"}, {"args": "{'a': open}"}, {"stride": "0"}):
        with pytest.raises(MetadataError):
            check_metadata(bad, "m.onnx")


def test_yolov5_metadata_eval_parses_literals_only():
    import yolov5.models.common as common

    assert common.eval("{0: 'person'}") == {0: "person"}
    with pytest.raises(MetadataError):
        common.eval("__import__('os').system('true')")


# --------------------------------------------------------------------------------------------- resume
def test_resumed_options_keep_training_settings_and_confine_the_rest(tmp_path):
    from yolo_backbones.hosts.yolov5.compat.resume import resumed_options

    user = argparse.Namespace(epochs=100, batch_size=16, hyp=Path("/yolov5/data/hyps/hyp.yaml"), data="coco8.yaml",
                              evolve=None, bucket="", save_dir="", s3_upload_dir=None, entity=None, device="",
                              weights="yolov5s.pt", project="runs/train", name="exp", exist_ok=False,
                              upload_dataset=False)
    stored = {"epochs": 3, "batch_size": "16; rm -rf /", "hyp": {"lr0": 0.02}, "data": "https://evil/x.yaml",
              "evolve": 300, "bucket": "x; touch pwned", "save_dir": "/etc", "s3_upload_dir": "s3://evil",
              "entity": "evil", "device": "cpu", "unknown": 1, "project": "/elsewhere"}
    last = tmp_path / "runs" / "exp" / "weights" / "last.pt"
    out = resumed_options(stored, user, last)
    assert out["epochs"] == 3 and out["hyp"] == {"lr0": 0.02} and out["device"] == "cpu"
    assert out["batch_size"] == 16 and out["data"] == "coco8.yaml"  # wrong type / a URL: the user's value
    assert out["evolve"] is None and out["bucket"] == "" and out["s3_upload_dir"] is None and out["entity"] is None
    assert out["save_dir"] == str((tmp_path / "runs" / "exp").resolve()) and "unknown" not in out


def test_checkpoint_hooks_confine_run_folders(tmp_path):
    weights = tmp_path / "runs" / "exp" / "weights"
    weights.mkdir(parents=True)
    write_checkpoint(weights / "last.pt", {"opt": {"save_dir": "/etc", "evolve": 3, "bucket": "x; y"},
                                           "train_args": {"save_dir": "/etc", "project": "/elsewhere"}})
    pytest.importorskip("ultralytics.nn.tasks")
    yolo_backbones.install()
    ckpt = load_checkpoint(weights / "last.pt")
    run = str((tmp_path / "runs" / "exp").resolve())
    assert ckpt["opt"] == {"save_dir": run, "evolve": None, "bucket": ""}
    assert ckpt["train_args"]["save_dir"] == run
