"""The restricted checkpoint loader: gadgets are refused before anything runs, genuine files load,
bad files get one clear line. Every file is generated here (see ``gadgets.py``); nothing is downloaded.
"""
from __future__ import annotations

import argparse
import ast
import collections
import gc
import gzip
import io
import json
import os
import pickle
import subprocess
import sys
import tarfile
import types
import warnings
import zipfile
from pathlib import Path, PosixPath

import numpy as np
import pytest
import torch
from torch import nn

import gadgets
from gadgets import GADGETS, NESTS, call, install_fake_host, reconstruct, write_checkpoint, write_gadget
from yolo_backbones.core.weights import safe_load
from yolo_backbones.core.weights.safe_load import (
    TRUST_ENV, CheckpointFileError, UnsafeCheckpointLoadWarning, UntrustedCheckpointError, allow_classes,
    load_checkpoint, register_data_class, register_model_namespace, register_module_alias)

HOST = install_fake_host()
register_model_namespace(gadgets.FAKE_HOST)
register_module_alias("yb_oldhost", gadgets.FAKE_HOST)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    monkeypatch.delenv(TRUST_ENV, raising=False)
    monkeypatch.delenv("TORCH_FORCE_WEIGHTS_ONLY_LOAD", raising=False)
    torch.set_num_threads(1)


def assert_refused(path: Path, marker: Path, global_name: str | None = None) -> UntrustedCheckpointError:
    with pytest.raises(UntrustedCheckpointError) as info:
        load_checkpoint(path)
    gc.collect()  # a half-built object with a __del__ payload would fire here
    assert not marker.exists(), f"the payload of {path.name} ran"
    msg = str(info.value)
    assert "\n" not in msg and str(path) in msg
    assert "yolo_backbones.allow_classes(" in msg and TRUST_ENV in msg, msg
    if global_name is not None:
        assert info.value.global_name == global_name, msg
        assert f"`{global_name}`" in msg
    return info.value


# ------------------------------------------------------------------------------------- gadgets
@pytest.mark.parametrize("name", list(GADGETS))
def test_gadget_refused(name, tmp_path):
    path, marker = write_gadget(name, tmp_path)
    err = assert_refused(path, marker)
    assert err.reason and err.path == str(path)


EXPECTED_GLOBAL = {
    "os_system": "posix.system" if os.name == "posix" else None, "builtins_eval": "builtins.eval",
    "host_class_call": "yb_fakehost.models.Model", "host_function_call": "yb_fakehost.models.parse_model",
    "yolov5_model_cfg": "models.yolo.Model", "host_setstate": "yb_fakehost.models.Stateful",
    "host_del": "yb_fakehost.models.Finalized", "bound_forward_call": "yb_fakehost.models.Layer.forward",
    "torch_nn_function_call": "torch.nn.modules.module.register_module_forward_pre_hook",
    "loader_function_call": "yolo_backbones.core.weights.safe_load.register_model_namespace",
    "tensor_hooks": "torch._utils._rebuild_tensor_v2",
    "ddp_reconstruct": "torch.nn.parallel.distributed.DistributedDataParallel",
}


@pytest.mark.parametrize("name", [n for n, g in EXPECTED_GLOBAL.items() if g])
def test_refusal_names_the_global(name, tmp_path):
    path, marker = write_gadget(name, tmp_path)
    assert_refused(path, marker, EXPECTED_GLOBAL[name])


PROTOCOL_GADGETS = ["builtins_eval", "os_system", "getattr_import", "host_class_call", "host_function_call",
                    "host_reconstructor_base", "getattr_method", "host_setstate", "build_forward_class",
                    "build_hook_class", "appends_on_module", "tensor_hooks"]


@pytest.mark.parametrize("protocol", gadgets.pickle_protocols())
@pytest.mark.parametrize("name", PROTOCOL_GADGETS)
def test_gadget_refused_every_protocol(name, protocol, tmp_path):
    if protocol < GADGETS[name].min_protocol:
        pytest.skip("needs a newer pickle protocol")
    path, marker = write_gadget(name, tmp_path, protocol=protocol)
    assert_refused(path, marker)


@pytest.mark.parametrize("where", NESTS)
@pytest.mark.parametrize("name", ["builtins_eval", "host_class_call", "bound_forward_fuse_call", "host_del",
                                  "build_forward_class"])
@pytest.mark.parametrize("protocol", [2, 5])
def test_nested_gadget_refused(name, where, protocol, tmp_path):
    path, marker = write_gadget(name, tmp_path, protocol=protocol, nest_in=where)
    assert_refused(path, marker)


@pytest.mark.parametrize("name", [n for n, g in GADGETS.items() if g.runs_on_plain_load])
def test_gadget_runs_under_plain_pickle(name, tmp_path):
    """Positive control: without the restricted loader each of these gadgets does run its payload."""
    path, marker = write_gadget(name, tmp_path)
    try:
        obj = torch.load(path, weights_only=False)
        del obj
    except Exception:  # noqa: BLE001 - payloads may break the rest of the load after running
        pass
    gc.collect()
    assert marker.exists()


def _marking_init(cls: type, marker: Path):
    original = cls.__init__

    def init(self, *args, **kwargs):
        marker.write_text(cls.__name__)
        original(self, *args, **kwargs)

    return init


def _yolo_backbones_classes(limit: int = 3) -> list[type]:
    import yolo_backbones  # noqa: F401 - loads the package's modules

    found = {obj for name, mod in list(sys.modules.items()) if name.startswith("yolo_backbones.") and mod
             for obj in vars(mod).values()
             if isinstance(obj, type) and issubclass(obj, nn.Module) and obj.__module__.startswith("yolo_backbones.")}
    return sorted(found, key=lambda c: f"{c.__module__}.{c.__qualname__}")[:limit]


CLASS_CALLS = [(nn.Conv2d, (3, 8, 3)), (nn.BatchNorm2d, (8,)), (nn.Linear, (4, 2)), (nn.Sequential, ()),
               (nn.SiLU, ()), (HOST.Model, ({"exprs": []},))]


@pytest.mark.parametrize("cls,args", CLASS_CALLS + [(c, ()) for c in _yolo_backbones_classes()],
                         ids=lambda v: v.__qualname__ if isinstance(v, type) else "")
@pytest.mark.parametrize("protocol", [0, 2, 4])
def test_calling_an_allowed_class_never_runs_init(cls, args, protocol, tmp_path, monkeypatch):
    marker = tmp_path / "init.marker"
    monkeypatch.setattr(cls, "__init__", _marking_init(cls, marker))
    path = write_checkpoint(tmp_path / "call.pt", {"model": call(cls, *args)}, protocol)
    err = assert_refused(path, marker)
    assert "constructor" in err.reason
    # The same class written the way torch.save writes an instance is rebuilt without __init__.
    monkeypatch.undo()
    if cls.__module__.startswith("torch.nn") or cls is HOST.Model:
        obj = cls(*args)
        monkeypatch.setattr(cls, "__init__", _marking_init(cls, marker))
        good = write_checkpoint(tmp_path / "good.pt", {"model": obj}, max(protocol, 2))
        assert type(load_checkpoint(good)["model"]) is cls
        assert not marker.exists()


def test_class_objects_cannot_be_modified_by_a_file(tmp_path):
    path, marker = write_gadget("build_on_class_object", tmp_path)
    assert_refused(path, marker)
    torch.save({"p": HOST.Plain()}, tmp_path / "plain.pt")  # the loader's cached class entry is intact
    assert type(load_checkpoint(tmp_path / "plain.pt")["p"]) is HOST.Plain


def test_numpy_shared_dtypes_are_never_modified(tmp_path):
    # numpy.dtype('f8', False, False) is numpy's process-wide float64 descriptor; a BUILD on it would
    # change every float64 array of the process. The loader always asks numpy for a copy.
    obj = gadgets.Call(np.dtype, "f8", False, False, state=(3, ">", None, None, None, -1, -1, 0))
    path = write_checkpoint(tmp_path / "dtype.pt", {"d": obj})
    out = load_checkpoint(path)["d"]
    assert out.byteorder == ">" and np.dtype("f8").byteorder == "="


def test_module_outside_namespaces_is_never_imported(tmp_path, monkeypatch):
    marker = tmp_path / "import.marker"
    (tmp_path / "yb_evil_module.py").write_text(f"open({str(marker)!r}, 'w').write('imported')\nclass Model: pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    data = b"\x80\x02cyb_evil_module\nModel\n)\x81."  # NEWOBJ of yb_evil_module.Model
    path = gadgets.write_raw(tmp_path / "evil_import.pt", data)
    assert_refused(path, marker, "yb_evil_module.Model")
    assert "yb_evil_module" not in sys.modules


def test_yolov5_model_gadget_against_real_yolov5(tmp_path):
    """The attack of issue 9 with the real pip YOLOv5 class: refused by the loader, while stock YOLOv5 runs it.

    With the plugin installed even a plain unpickling cannot run it (its parse_model never evals YAML strings).
    """
    pytest.importorskip("yolov5")
    path, marker = write_gadget("yolov5_pip_model_cfg", tmp_path)
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    refused = f"""
import gc
from pathlib import Path
import yolo_backbones
from yolo_backbones.core.weights.safe_load import load_checkpoint, register_model_namespace, UntrustedCheckpointError
register_model_namespace("yolov5.models")
try:
    load_checkpoint({str(path)!r})
except UntrustedCheckpointError as e:
    print("REFUSED", e.global_name)
gc.collect()
print("MARKER_AFTER_REFUSAL", Path({str(marker)!r}).exists())
import torch
try:
    torch.load({str(path)!r}, weights_only=False)
except Exception:
    pass
print("MARKER_AFTER_PLAIN_LOAD_WITH_PLUGIN", Path({str(marker)!r}).exists())
"""
    out = subprocess.run([sys.executable, "-c", refused], capture_output=True, text=True, timeout=300, env=env,
                         cwd=tmp_path)
    assert "REFUSED yolov5.models.yolo.Model" in out.stdout, out.stdout + out.stderr[-3000:]
    assert "MARKER_AFTER_REFUSAL False" in out.stdout
    assert "MARKER_AFTER_PLAIN_LOAD_WITH_PLUGIN False" in out.stdout
    stock = f"import torch\ntry:\n    torch.load({str(path)!r}, weights_only=False)\nexcept Exception:\n    pass\n"
    subprocess.run([sys.executable, "-c", stock], capture_output=True, text=True, timeout=300, cwd=tmp_path,
                   env={**env, "YOLO_BACKBONES_NO_AUTOLOAD": "1"})
    assert marker.exists(), "the gadget is real: stock YOLOv5 evaluates the file's config"


# ---------------------------------------------------------------------------------- genuine files
def yolo_like_checkpoint() -> tuple[dict, nn.Module]:
    model = nn.Sequential(nn.Conv2d(3, 8, 3, bias=False), nn.BatchNorm2d(8), nn.SiLU(), nn.Conv2d(8, 4, 1))
    sgd = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    adam = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(2, 3, 8, 8)).sum().backward()
    sgd.step(), adam.step()
    model.names = {0: "person", 1: "car"}  # plain attributes, as YOLO models carry them
    model.yaml = {"nc": 2, "backbone": [[-1, 1, "Conv", [8, 3]]]}
    ckpt = {
        "epoch": 3, "best_fitness": np.float64(0.25), "fitness_arr": np.array([0.1, 0.2], dtype=np.float32),
        "model": model, "ema": None, "updates": np.int64(7), "optimizer": sgd.state_dict(), "adam": adam.state_dict(),
        "opt": argparse.Namespace(weights=PosixPath("runs/w.pt"), epochs=3, hyp={"lr0": 0.01}),
        "od": collections.OrderedDict(a=1, b=[2, 3]), "sn": types.SimpleNamespace(x=1), "set": {1, 2},
        "fs": frozenset({3}), "bytes": b"\x00\xff", "ba": bytearray(b"ab"), "cplx": 1 + 2j, "sl": slice(1, 5, 2),
        "dev": torch.device("cpu"), "size": torch.Size([2, 3]), "dtype": torch.float16,
        "git": {"remote": None}, "date": "2026-01-01",
    }
    return ckpt, model


def assert_same_checkpoint(out: dict, ckpt: dict, model: nn.Module) -> None:
    m = out["model"]
    assert type(m) is nn.Sequential and [type(x) for x in m] == [type(x) for x in model]
    for (k, a), (k2, b) in zip(m.state_dict().items(), model.state_dict().items()):
        assert k == k2 and torch.equal(a, b)
    x = torch.randn(1, 3, 8, 8)
    assert torch.equal(m.eval()(x), model.eval()(x))
    assert m.names == model.names and m.yaml == model.yaml
    for key in ("epoch", "best_fitness", "updates", "od", "set", "fs", "bytes", "ba", "cplx", "sl", "dev", "size",
                "dtype", "git", "date"):
        assert out[key] == ckpt[key] and type(out[key]) is type(ckpt[key]), key
    assert np.array_equal(out["fitness_arr"], ckpt["fitness_arr"]) and out["fitness_arr"].dtype == np.float32
    assert vars(out["opt"]) == vars(ckpt["opt"]) and type(out["opt"].weights) is PosixPath
    assert out["sn"] == ckpt["sn"]
    for name in ("optimizer", "adam"):
        assert out[name]["param_groups"] == ckpt[name]["param_groups"]
        for pid, state in ckpt[name]["state"].items():
            for k, v in state.items():
                assert torch.equal(out[name]["state"][pid][k], v)


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_genuine_checkpoint_loads(protocol, tmp_path):
    ckpt, model = yolo_like_checkpoint()
    path = tmp_path / "ok.pt"
    torch.save(ckpt, path, pickle_protocol=protocol)
    assert_same_checkpoint(load_checkpoint(path), ckpt, model)
    with open(path, "rb") as fh:  # a file object, as torch.load takes too
        assert_same_checkpoint(load_checkpoint(fh), ckpt, model)
    assert_same_checkpoint(load_checkpoint(io.BytesIO(path.read_bytes())), ckpt, model)


@pytest.mark.parametrize("protocol", [2, 4])
def test_saved_state_dict_loads_with_its_metadata(protocol, tmp_path):
    """torch.save(model.state_dict()): an OrderedDict whose BUILD restores `_metadata` (the official checkpoints' form)."""
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    path = tmp_path / "sd.pth"
    torch.save({"model": model.state_dict(), "epoch": 3}, path, pickle_protocol=protocol)
    out = load_checkpoint(path)["model"]
    assert type(out) is collections.OrderedDict and list(out) == list(model.state_dict())
    assert out._metadata == model.state_dict()._metadata
    assert all(torch.equal(out[k], v) for k, v in model.state_dict().items())


def test_legacy_format_loads_through_the_restricted_unpickler(tmp_path):
    ckpt, model = yolo_like_checkpoint()
    path = tmp_path / "legacy.pt"
    torch.save(ckpt, path, _use_new_zipfile_serialization=False)
    assert not zipfile.is_zipfile(path)
    assert_same_checkpoint(load_checkpoint(path), ckpt, model)
    # ... and a gadget in that format is refused like any other.
    marker = tmp_path / "legacy.marker"
    bad = tmp_path / "legacy_bad.pt"
    with gadgets._stand_ins_installed():
        torch.save({"model": model, "x": call(HOST.Model, {"exprs": [gadgets._touch_expr(marker)]})}, bad,
                   _use_new_zipfile_serialization=False)
    assert_refused(bad, marker, "yb_fakehost.models.Model")


def test_fused_model_with_bound_forward_loads(tmp_path):
    model = nn.Sequential(HOST.Layer(), nn.Sequential(HOST.Layer(), nn.Identity()))
    for m in model.modules():
        if isinstance(m, HOST.Layer):
            m.forward = m.forward_fuse  # what YOLOv5 / ultralytics fuse() does
    torch.save({"model": model}, tmp_path / "fused.pt")
    out = load_checkpoint(tmp_path / "fused.pt")["model"]
    layers = [m for m in out.modules() if isinstance(m, HOST.Layer)]
    assert len(layers) == 2
    for m in layers:
        assert m.forward.__func__ is HOST.Layer.forward_fuse and m.forward.__self__ is m
    assert torch.equal(out(torch.ones(2)), torch.ones(2))


def test_half_precision_and_map_location(tmp_path):
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).half()
    path = tmp_path / "half.pt"
    torch.save({"model": model, "ema": model}, path)
    for loc in (None, "cpu", torch.device("cpu"), {"cpu": "cpu"}, lambda storage, location: storage):
        out = load_checkpoint(path, map_location=loc)
        assert out["model"] is out["ema"]  # shared objects stay shared
        assert all(p.dtype == torch.float16 and p.device.type == "cpu" for p in out["model"].parameters())
        assert torch.equal(out["model"][0].weight, model[0].weight)
    meta = load_checkpoint(path, map_location="meta")["model"]
    assert all(p.device.type == "meta" for p in meta.parameters())
    assert load_checkpoint(path, "cpu", mmap=True)["model"][0].weight.dtype == torch.float16


def test_weights_only_true_keeps_torch_semantics(tmp_path):
    path = tmp_path / "sd.pt"
    torch.save({"w": torch.ones(2)}, path)
    assert torch.equal(load_checkpoint(path, weights_only=True)["w"], torch.ones(2))
    torch.save({"model": HOST.Layer()}, tmp_path / "m.pt")
    with pytest.raises(pickle.UnpicklingError) as info:
        load_checkpoint(tmp_path / "m.pt", weights_only=True)
    assert not isinstance(info.value, UntrustedCheckpointError)  # torch's own refusal
    assert isinstance(load_checkpoint(tmp_path / "m.pt", weights_only=False)["model"], HOST.Layer)


def test_trust_env_loads_with_plain_pickle_and_warns(tmp_path, monkeypatch):
    path, marker = write_gadget("builtins_eval", tmp_path)
    monkeypatch.setenv(TRUST_ENV, "1")
    with pytest.warns(UnsafeCheckpointLoadWarning, match=TRUST_ENV):
        load_checkpoint(path)
    assert marker.exists()  # the opt-in really is "run anything"
    assert not issubclass(UnsafeCheckpointLoadWarning, UserWarning)  # YOLOv5 silences UserWarnings


def test_data_class_and_allow_classes(tmp_path):
    class Args(types.SimpleNamespace):  # like ultralytics' IterableSimpleNamespace (pickles as Args())
        def get(self, key, default=None):
            return getattr(self, key, default)

    class Custom(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(2, 2)

    class Vouched:
        def __setstate__(self, state):
            self.__dict__.update(state, restored=True)

    for cls in (Args, Custom, Vouched):  # make them picklable by reference from this module
        cls.__qualname__ = cls.__name__
        setattr(sys.modules[__name__], cls.__name__, cls)
    vouched = Vouched()
    vouched.x = 1
    obj = {"args": Args(imgsz=64, names=["a"]), "model": Custom(), "v": vouched}
    torch.save(obj, tmp_path / "custom.pt")
    with pytest.raises(UntrustedCheckpointError, match="neither a class of an allowed namespace"):
        load_checkpoint(tmp_path / "custom.pt")
    register_data_class(Args)
    allow_classes(Custom, Vouched)
    out = load_checkpoint(tmp_path / "custom.pt")
    assert type(out["args"]) is Args and out["args"].get("imgsz") == 64 and out["args"].names == ["a"]
    assert torch.equal(out["model"].lin.weight, obj["model"].lin.weight)
    assert out["v"].restored and out["v"].x == 1  # a vouched-for __setstate__ runs
    with pytest.raises(TypeError, match="functions cannot be allowed"):
        allow_classes(print)
    with pytest.raises(TypeError, match="__new__"):
        allow_classes(torch.Size)


def test_module_alias_reads_moved_classes(tmp_path):
    obj = reconstruct(gadgets.ref("yb_oldhost.models.Plain"), {"x": 1})
    path = write_checkpoint(tmp_path / "old.pt", {"p": obj})
    assert type(load_checkpoint(path)["p"]) is HOST.Plain


def test_module_is_self_contained():
    """The loader package imports only the standard library, torch, numpy and its own modules."""
    top = set()
    for path in Path(safe_load.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                top |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level != 1:  # level 1: a sibling in the package
                top.add("." * node.level + (node.module or "").split(".")[0])
    assert top <= set(sys.stdlib_module_names) | {"torch", "numpy", "__future__"}, top


# ---------------------------------------------------------------------------------------- bad files
def _png(path: Path) -> None:
    from PIL import Image
    Image.new("RGB", (4, 4)).save(path, format="PNG")


def _jpeg(path: Path) -> None:
    from PIL import Image
    Image.new("RGB", (4, 4)).save(path, format="JPEG")


def _onnx(path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    h = onnx.helper
    graph = h.make_graph([h.make_node("Relu", ["x"], ["y"])], "g",
                         [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
                         [h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])])
    onnx.save(h.make_model(graph, producer_name="pytorch"), str(path))


def _safetensors(path: Path) -> None:
    header = json.dumps({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
    path.write_bytes(len(header).to_bytes(8, "little") + header + bytes(8))


def _yaml(path: Path) -> None:
    path.write_text("# YOLOv5 EdgeViT\nnc: 80\ndepth_multiple: 0.33\nbackbone:\n  [[-1, 1, EdgeViT, [xxs]]]\n")


def _torchscript(path: Path) -> None:
    torch.jit.script(nn.Linear(2, 2)).save(str(path))


def _tar(path: Path) -> None:
    with tarfile.open(path, "w") as tf:
        info = tarfile.TarInfo("a.txt")
        info.size = 2
        tf.addfile(info, io.BytesIO(b"hi"))


def _npz(path: Path) -> None:
    with open(path, "wb") as fh:
        np.savez(fh, a=np.zeros(2))


BAD_FILES = {
    "empty": (lambda p: p.write_bytes(b""), "empty"),
    "random": (lambda p: p.write_bytes(np.random.default_rng(0).bytes(4096)), "not recognised"),
    "png": (_png, "PNG image"),
    "jpeg": (_jpeg, "JPEG image"),
    "onnx": (_onnx, "ONNX model"),
    "safetensors": (_safetensors, "safetensors file"),
    "yaml": (_yaml, "YAML"),
    "torchscript": (_torchscript, "TorchScript"),
    "tar": (_tar, "tar archive"),
    "npz": (_npz, ".npz"),
    "zip": (lambda p: zipfile.ZipFile(p, "w").writestr("readme.txt", "hi"), "zip archive"),
    "gzip": (lambda p: p.write_bytes(gzip.compress(b"abc")), "gzip"),
    "plain_pickle": (lambda p: p.write_bytes(pickle.dumps({"a": 1}, protocol=4)), "plain pickle"),
    "html": (lambda p: p.write_text("<!DOCTYPE html><html><body>404</body></html>"), "HTML"),
    "lfs": (lambda p: p.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:ab\nsize 12\n"), "LFS"),
    "two_bytes": (lambda p: p.write_bytes(b"PK"), "truncated"),
}


def assert_file_error(path, match: str) -> CheckpointFileError:
    with pytest.raises(CheckpointFileError) as info:
        load_checkpoint(path)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith(str(path)), msg
    assert match.lower() in msg.lower(), msg
    return info.value


@pytest.mark.parametrize("kind", list(BAD_FILES))
def test_bad_file_gets_one_line(kind, tmp_path):
    write, match = BAD_FILES[kind]
    path = tmp_path / f"bad_{kind}.pt"
    write(path)
    assert_file_error(path, match)


def test_bad_file_object_gets_one_line():
    with pytest.raises(CheckpointFileError, match="empty"):
        load_checkpoint(io.BytesIO(b""))
    with pytest.raises(CheckpointFileError, match="PNG"):
        load_checkpoint(io.BytesIO(b"\x89PNG\r\n\x1a\n" + bytes(100)))


def test_missing_path_and_directory(tmp_path):
    assert_file_error(tmp_path / "nope.pt", "no such file")
    assert_file_error(tmp_path, "is a directory")
    (tmp_path / "weights").mkdir()
    torch.save({}, tmp_path / "weights" / "best.pt")
    err = assert_file_error(tmp_path, "did you mean")
    assert str(tmp_path / "weights" / "best.pt") in str(err)


def _offsets(size: int) -> list[int]:
    return sorted(set(range(0, min(size, 80))) | set(range(80, size, max(size // 150, 1)))
                  | set(range(max(size - 80, 0), size)))


def test_truncated_zip_checkpoint_at_every_offset(tmp_path):
    ckpt, _ = yolo_like_checkpoint()
    full = tmp_path / "full.pt"
    torch.save(ckpt, full)
    data = full.read_bytes()
    cut = tmp_path / "cut.pt"
    for n in _offsets(len(data)):
        cut.write_bytes(data[:n])
        with pytest.raises(CheckpointFileError) as info:
            load_checkpoint(cut)
        assert "\n" not in str(info.value), n
        assert ("empty" if n == 0 else "truncated") in str(info.value), (n, str(info.value))


def test_truncated_legacy_checkpoint(tmp_path):
    ckpt, _ = yolo_like_checkpoint()
    full = tmp_path / "legacy.pt"
    torch.save(ckpt, full, _use_new_zipfile_serialization=False)
    data = full.read_bytes()
    cut = tmp_path / "cut.pt"
    for n in _offsets(len(data))[1:]:
        cut.write_bytes(data[:n])
        with pytest.raises(CheckpointFileError) as info:
            load_checkpoint(cut)
        assert "\n" not in str(info.value), n


def test_damaged_records_inside_a_valid_zip(tmp_path):
    torch.save({"w": torch.ones(3)}, tmp_path / "src.pt")
    with zipfile.ZipFile(tmp_path / "src.pt") as src:
        names = src.namelist()
        records = {n: src.read(n) for n in names}
    pkl = next(n for n in names if n.endswith("/data.pkl"))
    # garbage pickle, then a pickle referring to a storage record that is missing
    for i, (mutate, drop) in enumerate([(lambda b: b"\x80\x02garbage", None), (lambda b: b, "/data/0")]):
        with zipfile.ZipFile(tmp_path / f"bad{i}.pt", "w") as dst:
            for n, b in records.items():
                if drop and n.endswith(drop):
                    continue
                dst.writestr(n, mutate(b) if n == pkl else b)
        assert_file_error(tmp_path / f"bad{i}.pt", "damaged")
