"""The checkpoint loader reads files as data: gadgets are refused or dropped before anything of them runs, models
are rebuilt from config and tensors, limits hold, genuine files load, bad files get one clear line.

Every file is generated here (see ``gadgets.py``); nothing is downloaded. Attacks whose harm is memory or time
run in subprocesses under a memory limit and a timeout: ``test_safe_load_limits.py``.
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
import struct
import subprocess
import sys
import tarfile
import types
import zipfile
from pathlib import Path, PosixPath

import numpy as np
import pytest
import torch
from torch import nn

from yolo_backbones import Select, create
from yolo_backbones.core.weights import safe_load
from yolo_backbones.core.weights.safe_load import (
    TRUST_ENV,
    CheckpointFileError,
    UnsafeCheckpointLoadWarning,
    UntrustedCheckpointError,
    allow_classes,
    load_checkpoint,
    register_data_class,
)

import gadgets
from gadgets import (
    CALLABLES,
    GADGETS,
    NESTS,
    PLACES,
    call,
    install_fake_host,
    memo_mutation_program,
    write_checkpoint,
    write_file_dict,
    write_gadget,
    write_later_gadget,
    write_raw,
)

HOST = install_fake_host()


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
    assert "\n" not in msg and str(path) in msg and "Nothing from the file was executed" in msg, msg
    assert TRUST_ENV in msg, msg
    if global_name is not None:
        assert info.value.global_name == global_name, msg
        assert f"`{global_name}`" in msg
    return info.value


# ------------------------------------------------------------------------------------- round one gadgets
@pytest.mark.parametrize("name", list(GADGETS))
def test_gadget_refused(name, tmp_path):
    path, marker = write_gadget(name, tmp_path)
    err = assert_refused(path, marker)
    assert err.reason and err.path == str(path)


EXPECTED_GLOBAL = {
    "os_system": "posix.system" if os.name == "posix" else None, "builtins_eval": "builtins.eval",
    "host_class_call": "yb_fakehost.models.Model", "host_function_call": "yb_fakehost.models.parse_model",
    "yolov5_model_cfg": "models.yolo.Model", "host_setstate": "yb_fakehost.models.Stateful",
    "host_del": "yb_fakehost.models.Finalized",
    "torch_nn_function_call": "torch.nn.modules.module.register_module_forward_pre_hook",
    "loader_function_call": "yolo_backbones.core.weights.safe_load.register_model_namespace",
    "tensor_hooks": "torch._utils._rebuild_tensor_v2",
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
    if where == "model_attr" and name in ("host_del", "build_forward_class"):
        # an object in an attribute of a layer is never made: the file loads without it (a call is refused)
        out = load_checkpoint(path)
        assert "extra" not in vars(out["model"][0]) and not marker.exists()
        return
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


def test_module_outside_namespaces_is_never_imported(tmp_path, monkeypatch):
    marker = tmp_path / "import.marker"
    (tmp_path / "yb_evil_module.py").write_text(f"open({str(marker)!r}, 'w').write('imported')\nclass Model: pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    path = write_raw(tmp_path / "evil_import.pt", b"\x80\x02cyb_evil_module\nModel\n)\x81.")
    assert_refused(path, marker, "yb_evil_module.Model")
    assert "yb_evil_module" not in sys.modules


def test_numpy_shared_dtypes_are_never_modified(tmp_path):
    # numpy.dtype('f8', False, False) is numpy's process-wide float64 descriptor; BUILD must never reach it.
    obj = gadgets.Call(np.dtype, "f8", False, False, state=(3, ">", None, None, None, -1, -1, 0))
    out = load_checkpoint(write_checkpoint(tmp_path / "dtype.pt", {"d": obj}))["d"]
    assert out.byteorder == ">" and np.dtype("f8").byteorder == "="


def test_yolov5_model_gadget_against_real_yolov5(tmp_path):
    """The attack of issue 9 with the real pip YOLOv5 class: refused, while stock YOLOv5 runs it."""
    pytest.importorskip("yolov5")
    path, marker = write_gadget("yolov5_pip_model_cfg", tmp_path)
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    refused = f"""
import gc
from pathlib import Path
import yolo_backbones
from yolo_backbones.core.weights.safe_load import load_checkpoint, UntrustedCheckpointError
try:
    load_checkpoint({str(path)!r})
except UntrustedCheckpointError as e:
    print("REFUSED", e.global_name)
gc.collect()
print("MARKER_AFTER_REFUSAL", Path({str(marker)!r}).exists())
"""
    out = subprocess.run([sys.executable, "-c", refused], capture_output=True, text=True, timeout=300, env=env,
                         cwd=tmp_path)
    assert "REFUSED yolov5.models.yolo.Model" in out.stdout, out.stdout + out.stderr[-3000:]
    assert "MARKER_AFTER_REFUSAL False" in out.stdout
    stock = f"import torch\ntry:\n    torch.load({str(path)!r}, weights_only=False)\nexcept Exception:\n    pass\n"
    subprocess.run([sys.executable, "-c", stock], capture_output=True, text=True, timeout=300, cwd=tmp_path,
                   env={**env, "YOLO_BACKBONES_NO_AUTOLOAD": "1"})
    assert marker.exists(), "the gadget is real: stock YOLOv5 evaluates the file's config"


# ------------------------------------------------------------------------ round two: payloads used later
def _run_everything(model: nn.Module) -> None:
    """What hosts do with a loaded model: forward (eval and train), state_dict, copies, fuse."""
    x = torch.zeros(1, 3, 8, 8)
    model.eval()(x)
    model.train()(x)
    model.state_dict()
    import copy

    copy.deepcopy(model)
    pickle.loads(pickle.dumps(model))


@pytest.mark.parametrize("place", PLACES)
@pytest.mark.parametrize("kind", list(CALLABLES))
def test_payloads_for_later_never_reach_the_model(kind, place, tmp_path):
    """A callable of the file as forward, hook or attribute (any class, any container): refused, or dropped with
    the record it sat in; the returned model runs, copies and saves without calling anything of the file."""
    path, marker = write_later_gadget(kind, place, tmp_path)
    try:
        out = load_checkpoint(path)
    except UntrustedCheckpointError as e:
        assert "\n" not in str(e) and str(path) in str(e)
    else:
        assert place in ("list_attr", "dict_attr", "tuple_attr"), f"{kind} as {place} was accepted"
        model = out["model"]
        assert not any(a in vars(m) for m in model.modules() for a in ("callbacks", "transforms", "act", "forward"))
        _run_everything(model)
    gc.collect()
    assert not marker.exists()


@pytest.mark.parametrize("place", ["forward", "forward_hook", "list_attr"])
def test_later_payload_is_real_under_plain_pickle(place, tmp_path):
    """Positive control: the same file through plain pickle calls the payload when the model runs."""
    path, marker = write_later_gadget("caller_instance", place, tmp_path)
    model = torch.load(path, weights_only=False)["model"]
    try:
        model(torch.zeros(1, 3, 8, 8))
        for m in model.modules():
            for cb in vars(m).get("callbacks", []):
                cb()
    except Exception:  # noqa: BLE001 - the payload returns garbage for the rest of the forward
        pass
    assert marker.exists()


def test_memo_mutation_after_build_is_seen(tmp_path):
    """A hook dict empty at BUILD and filled later through the pickle memo: checked in its final state."""
    marker = tmp_path / "memo.marker"
    path = write_raw(tmp_path / "memo.pt", memo_mutation_program(marker))
    err = assert_refused(path, marker)
    assert "_forward_hooks" in err.reason
    plain = torch.load(path, weights_only=False)["model"]  # positive control
    plain(torch.zeros(1))
    assert marker.exists()


@pytest.mark.parametrize("where", ["top", "nested", "jsondict"])
def test_file_backed_dicts_are_refused_and_the_victim_is_intact(where, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    path = write_file_dict(tmp_path, victim, where)
    with pytest.raises(UntrustedCheckpointError, match="object of a class this loader does not rebuild"):
        load_checkpoint(path)
    assert victim.read_text() == "precious"


def test_rebuilt_model_holds_nothing_of_the_file_but_tensors(tmp_path):
    """Every attribute of every module of a loaded model is the builder's (torch / builtins), or a tensor."""
    path, _ = write_later_gadget("caller_instance", "list_attr", tmp_path)
    model = load_checkpoint(path)["model"]
    for m in model.modules():
        for key, value in vars(m).items():
            assert type(value).__module__.split(".")[0] in ("builtins", "collections", "torch"), (key, type(value))


# ---------------------------------------------------------------------------------- in-process limits
def test_deep_tuples_are_refused_before_hashing(tmp_path):
    path = write_raw(tmp_path / "tuples.pt", b"\x80\x02)" + b"\x85" * 100_000 + b".")
    err = assert_refused(path, tmp_path / "none")
    assert err.limit == "MAX_TUPLE_DEPTH"


def test_deep_lists_are_refused(tmp_path):
    path = write_raw(tmp_path / "lists.pt", b"\x80\x02" + b"]" * 50_000 + b"a" * 49_999 + b".")
    assert assert_refused(path, tmp_path / "none").limit == "MAX_DEPTH"


def test_huge_integer_is_refused(tmp_path):
    path = write_raw(tmp_path / "int.pt", b"\x80\x02\x8b" + (10_000_000).to_bytes(4, "little") + b"\x01" * 100 + b".")
    assert assert_refused(path, tmp_path / "none").limit == "MAX_INT_BYTES"


def test_object_count_is_bounded(tmp_path, monkeypatch):
    from yolo_backbones.core.weights.safe_load import limits

    monkeypatch.setattr(limits, "MAX_PUSHES", 1000)
    path = write_raw(tmp_path / "many.pt", b"\x80\x02](" + b"N" * 2000 + b"e.")
    assert assert_refused(path, tmp_path / "none").limit == "MAX_PUSHES"


def _rewrite_zip(src: bytes, dst: Path, *, compress: str | None = None, duplicate: str | None = None,
                 rename: tuple[str, str] | None = None) -> Path:
    with zipfile.ZipFile(io.BytesIO(src)) as z, zipfile.ZipFile(dst, "w") as o:
        for info in z.infolist():
            data = z.read(info)
            name = info.filename
            if rename and name.endswith(rename[0]):
                name = name[: -len(rename[0])] + rename[1]
            kind = zipfile.ZIP_DEFLATED if compress and name.endswith(compress) else zipfile.ZIP_STORED
            o.writestr(name, data, compress_type=kind)
            if duplicate and name.endswith(duplicate):
                o.writestr(name, data)
    return dst


def _saved(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


@pytest.mark.parametrize("member", ["data.pkl", "data/0", "version"])
def test_compressed_members_are_refused(member, tmp_path):
    path = _rewrite_zip(_saved({"w": torch.zeros(4096)}), tmp_path / "deflated.pt", compress=member)
    err = assert_refused(path, tmp_path / "none")
    assert "compressed" in err.reason


def test_duplicated_and_escaping_members_are_refused(tmp_path):
    src = _saved({"w": torch.zeros(8)})
    with pytest.warns(UserWarning):  # zipfile warns about the duplicate name it writes
        dup = _rewrite_zip(src, tmp_path / "dup.pt", duplicate="data/0")
    assert "twice" in assert_refused(dup, tmp_path / "none").reason
    esc = _rewrite_zip(src, tmp_path / "esc.pt", rename=("data/0", "data/../../0"))
    assert "'..'" in assert_refused(esc, tmp_path / "none").reason


def _central_entries(data: bytes) -> dict[str, int]:
    """Name -> position of its central-directory entry in a zip's bytes."""
    out, pos = {}, data.find(b"PK\x01\x02")
    while pos >= 0:
        n, m, k = struct.unpack_from("<HHH", data, pos + 28)
        out[data[pos + 46: pos + 46 + n].decode()] = pos
        pos = data.find(b"PK\x01\x02", pos + 46 + n + m + k)
    return out


def test_members_sharing_bytes_are_refused(tmp_path):
    """A directory entry pointing into another member's bytes would let a small file hold two large storages."""
    data = bytearray(_saved({"a": torch.zeros(1000), "b": torch.ones(1000)}))
    entries = _central_entries(bytes(data))
    a, b = (next(n for n in entries if n.endswith(f"data/{k}")) for k in "01")
    a_offset = struct.unpack_from("<I", data, entries[a] + 42)[0]
    struct.pack_into("<I", data, entries[b] + 42, a_offset)  # b's entry now points at a's record
    path = tmp_path / "shared.pt"
    path.write_bytes(bytes(data))
    err = assert_refused(path, tmp_path / "none")
    assert "share bytes" in err.reason or "names another file" in err.reason


def _tensor_file(tmp_path: Path, name: str, storage: torch.Tensor, offset: int, size: tuple, stride: tuple) -> Path:
    args = (storage._typed_storage(), offset, size, stride, False, collections.OrderedDict())
    payload = gadgets.Call(torch._utils._rebuild_tensor_v2, *args)
    return write_checkpoint(tmp_path / name, {"buffer": payload})


def test_stride_zero_expansion_is_refused_beyond_a_small_size(tmp_path):
    half = torch.zeros(1, dtype=torch.float16)
    big = _tensor_file(tmp_path, "s0.pt", half, 0, (100_000, 50_000), (0, 0))
    assert assert_refused(big, tmp_path / "none").limit == "MAX_EXPANDED_ELEMENTS"
    small = _tensor_file(tmp_path, "s0_small.pt", half, 0, (4, 8), (0, 0))
    out = load_checkpoint(small)["buffer"]
    assert out.shape == (4, 8) and out.is_contiguous()  # copied: no two elements share memory


def test_view_beyond_its_storage_is_refused(tmp_path):
    path = _tensor_file(tmp_path, "oob.pt", torch.zeros(10), 5, (10,), (1,))
    assert "beyond their storage" in assert_refused(path, tmp_path / "none").reason


def test_views_covering_many_times_the_file_are_refused(tmp_path):
    storage = torch.zeros(100_000)
    views = [gadgets.Call(torch._utils._rebuild_tensor_v2, storage._typed_storage(), 0, (100_000,), (1,), False,
                          collections.OrderedDict()) for _ in range(20)]
    path = write_checkpoint(tmp_path / "views.pt", {"optimizer": {"state": {i: v for i, v in enumerate(views)}}})
    assert assert_refused(path, tmp_path / "none").limit == "VIEW_BYTES_FACTOR"


@pytest.mark.parametrize("attr,value", [("out_channels", 10**9), ("kernel_size", (40_000, 40_000))])
def test_absurd_layer_sizes_are_refused_before_allocating(attr, value, tmp_path):
    conv = nn.Conv2d(3, 4, 1)
    setattr(conv, attr, value)
    path = write_checkpoint(tmp_path / "conv.pt", {"model": conv})
    assert assert_refused(path, tmp_path / "none").limit == "BUILD_BYTES_FACTOR"


def test_recurrent_layer_count_is_bounded_by_the_file(tmp_path):
    lstm = nn.LSTM(2, 2, 1)
    lstm.num_layers = 100_000
    path = write_checkpoint(tmp_path / "lstm.pt", {"model": lstm})
    assert assert_refused(path, tmp_path / "none").limit == "BUILD_TENSORS_FACTOR"


def test_total_tensor_bytes_have_a_clear_cap(tmp_path, monkeypatch):
    path = write_checkpoint(tmp_path / "big.pt", {"w": torch.zeros(1 << 20)})
    monkeypatch.setenv("YOLO_BACKBONES_MAX_CHECKPOINT_MB", "1")
    err = assert_refused(path, tmp_path / "none")
    assert err.limit == "YOLO_BACKBONES_MAX_CHECKPOINT_MB" and "YOLO_BACKBONES_MAX_CHECKPOINT_MB" in str(err)


def test_unsupported_tensor_kinds_are_refused_in_one_line(tmp_path):
    sparse = torch.sparse_coo_tensor(torch.tensor([[0, 7]]), torch.tensor([1.0, 2.0]), (3,), check_invariants=False)
    path = tmp_path / "sparse.pt"
    torch.save({"s": sparse}, path)
    assert "sparse" in assert_refused(path, tmp_path / "none", "torch._utils._rebuild_sparse_tensor").reason


# ---------------------------------------------------------------------------------- genuine files
def yolo_like_checkpoint() -> tuple[dict, nn.Module]:
    model = nn.Sequential(nn.Conv2d(3, 8, 3, bias=False), nn.BatchNorm2d(8), nn.SiLU(), nn.Conv2d(8, 4, 1))
    sgd = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    adam = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(2, 3, 8, 8)).sum().backward()
    sgd.step(), adam.step()
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
    assert m is not model
    for (k, a), (k2, b) in zip(m.state_dict().items(), model.state_dict().items()):
        assert k == k2 and torch.equal(a, b)
    x = torch.randn(1, 3, 8, 8)
    assert torch.equal(m.eval()(x), model.eval()(x))
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


def test_rebuilt_parameters_keep_flags_and_training_mode(tmp_path):
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    model[0].weight.requires_grad_(False)
    model[1].eval()
    torch.save({"model": model}, tmp_path / "flags.pt")
    out = load_checkpoint(tmp_path / "flags.pt")["model"]
    assert not out[0].weight.requires_grad and out[0].bias.requires_grad
    assert out.training and out[0].training and not out[1].training


@pytest.mark.parametrize("protocol", [2, 4])
def test_saved_state_dict_loads_with_its_metadata(protocol, tmp_path):
    """torch.save(model.state_dict()): an OrderedDict whose BUILD restores `_metadata` (official checkpoints' form)."""
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    path = tmp_path / "sd.pth"
    torch.save({"model": model.state_dict(), "epoch": 3}, path, pickle_protocol=protocol)
    out = load_checkpoint(path)["model"]
    assert type(out) is collections.OrderedDict and list(out) == list(model.state_dict())
    assert out._metadata == model.state_dict()._metadata
    assert all(torch.equal(out[k], v) for k, v in model.state_dict().items())


def test_legacy_format_loads_through_the_same_reader(tmp_path):
    ckpt, model = yolo_like_checkpoint()
    path = tmp_path / "legacy.pt"
    torch.save(ckpt, path, _use_new_zipfile_serialization=False)
    assert not zipfile.is_zipfile(path)
    assert_same_checkpoint(load_checkpoint(path), ckpt, model)
    marker = tmp_path / "legacy.marker"
    bad = tmp_path / "legacy_bad.pt"
    with gadgets._stand_ins_installed():
        torch.save({"model": model, "x": call(HOST.Model, {"exprs": [gadgets._touch_expr(marker)]})}, bad,
                   _use_new_zipfile_serialization=False)
    assert_refused(bad, marker, "yb_fakehost.models.Model")


@pytest.mark.parametrize("name", ["edgevit_xxs", "efficientformerv2_s0"])
def test_plugin_backbones_and_select_rebuild_without_a_config(name, tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(create(name, features_only=True, out_indices=(1, 2, 3)), Select(1)).eval()
    torch.save({"model": model}, tmp_path / "bb.pt")
    out = load_checkpoint(tmp_path / "bb.pt")["model"].eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(out(x), model(x))


def _as_list(y):
    return y if isinstance(y, list) else [y]


def _pruned_keeping_the_head(name: str) -> nn.Module:
    model = create(name, num_classes=10)
    model.prune_intermediate_layers([0, 1], prune_head=False)  # stages 2-3 and the norm go, the head stays
    return model


@pytest.mark.parametrize("build", [
    pytest.param(lambda: create("mobileformer_26m", num_classes=0), id="pooled features"),
    pytest.param(lambda: create("efficientformer_l1", num_classes=7, input_norm=True), id="classifier"),
    pytest.param(lambda: create("edgevit_xxs", features_only=True, out_indices=(0, 2)), id="stages 0 and 2"),
    pytest.param(lambda: _pruned_keeping_the_head("edgevit_xxs"), id="pruned, head kept"),
])
def test_backbone_rebuilds_in_its_mode(build, tmp_path):
    """The record's mode (classifier / pooled / feature extractor), input option and later pruning are rebuilt."""
    torch.manual_seed(0)
    model = build().eval()
    torch.save({"model": model}, tmp_path / "bb.pt")
    out = load_checkpoint(tmp_path / "bb.pt")["model"].eval()
    assert (out.features_only, out.num_classes, out.out_indices, out.input_norm) == \
        (model.features_only, model.num_classes, model.out_indices, model.input_norm)
    assert out.state_dict().keys() == model.state_dict().keys()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        a, b = (m.forward_intermediates(x, intermediates_only=True) for m in (out, model))
        if model.num_built_stages == 4 or model.features_only:  # a classifier pruned below its head has no forward
            a, b = [*a, *_as_list(out(x))], [*b, *_as_list(model(x))]
    assert len(a) == len(b) and all(torch.equal(u, v) for u, v in zip(a, b))


def test_fused_backbone_rebuilds_fused(tmp_path):
    torch.manual_seed(0)
    model = create("edgevit_xxs", features_only=True, out_indices=(1, 2, 3)).eval()
    model.fuse()
    torch.save({"model": model}, tmp_path / "fused.pt")
    out = load_checkpoint(tmp_path / "fused.pt")["model"].eval()
    assert getattr(out, "fused", False)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(out(x), model(x)):
            assert torch.equal(a, b)


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


def test_weights_only_true_refuses_models(tmp_path):
    path = tmp_path / "sd.pt"
    torch.save({"w": torch.ones(2)}, path)
    assert torch.equal(load_checkpoint(path, weights_only=True)["w"], torch.ones(2))
    torch.save({"model": nn.Linear(2, 2)}, tmp_path / "m.pt")
    with pytest.raises(UntrustedCheckpointError, match="weights_only=True"):
        load_checkpoint(tmp_path / "m.pt", weights_only=True)
    assert isinstance(load_checkpoint(tmp_path / "m.pt", weights_only=False)["model"], nn.Linear)


def test_trust_env_loads_with_plain_pickle_and_warns(tmp_path, monkeypatch):
    path, marker = write_gadget("builtins_eval", tmp_path)
    monkeypatch.setenv(TRUST_ENV, "1")
    with pytest.warns(UnsafeCheckpointLoadWarning, match=TRUST_ENV):
        load_checkpoint(path)
    assert marker.exists()  # the opt-in really is "run anything"
    assert not issubclass(UnsafeCheckpointLoadWarning, UserWarning)  # YOLOv5 silences UserWarnings


class Args(types.SimpleNamespace):  # like ultralytics' IterableSimpleNamespace (pickles as Args())
    def get(self, key, default=None):
        return getattr(self, key, default)


class Custom(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 2)


def test_namespaces_can_be_registered_and_other_classes_are_never_restored(tmp_path):
    obj = {"args": Args(imgsz=64, names=["a"]), "model": Custom()}
    torch.save({"args": obj["args"]}, tmp_path / "args.pt")
    with pytest.raises(UntrustedCheckpointError, match="test_safe_load.Args"):
        load_checkpoint(tmp_path / "args.pt")
    register_data_class(Args)
    out = load_checkpoint(tmp_path / "args.pt")
    assert type(out["args"]) is Args and out["args"].get("imgsz") == 64 and out["args"].names == ["a"]
    torch.save({"model": obj["model"]}, tmp_path / "custom.pt")
    allow_classes(Custom)  # a layer YAMLs may name: a standalone object of it is still not restored
    with pytest.raises(UntrustedCheckpointError, match="saved without the model config"):
        load_checkpoint(tmp_path / "custom.pt")
    for bad in (print, dict, types.SimpleNamespace):
        with pytest.raises(TypeError, match="nn.Module classes"):
            allow_classes(bad)
    with pytest.raises(TypeError):
        register_data_class(dict)


def test_loader_imports_no_host():
    """The loader package imports only the standard library, torch, numpy and the core's own modules."""
    top = set()
    for path in Path(safe_load.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                top |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                top.add((node.module or "").split(".")[0])
            elif isinstance(node, ast.ImportFrom) and node.level > 3:
                top.add("." * node.level)  # beyond yolo_backbones.core
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
    for i, (mutate, drop) in enumerate([(lambda b: b"\x80\x02garbage", None), (lambda b: b, "/data/0")]):
        with zipfile.ZipFile(tmp_path / f"bad{i}.pt", "w") as dst:
            for n, b in records.items():
                if drop and n.endswith(drop):
                    continue
                dst.writestr(n, mutate(b) if n == pkl else b)
        assert_file_error(tmp_path / f"bad{i}.pt", "damaged")
