"""Edge deployment (issue 21): export formulations, safe metadata, the edge extra, and parity of each format.

Fast tests check the building blocks. Slow tests convert real models: NCNN for one backbone of every family
(the fastest converter), LiteRT and Core ML for one family each, ExecuTorch for one ultralytics detector (their
conversions take 0.5-2 min per model on a shared 2-core machine), and NCNN detectors of both hosts end to end.
The full matrix (every YAML x every format) is not run in CI (scripts/edge_parity.py; docs/deployment.md).
"""
from __future__ import annotations

import importlib.metadata
import json
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import yolo_backbones as yb
from yolo_backbones.core.layers import Mlp
from yolo_backbones.core.layers.attention_bias import OffsetBiasAttention, static_biases
from yolo_backbones.core.layers.layout import subsample
from yolo_backbones.deploy import metadata as meta
from yolo_backbones.deploy.graph import export_ready
from yolo_backbones.deploy.parity import ParityError, check_parity, relative_error
from yolo_backbones.deploy.requirements import EdgeExtraMissingError, import_edge

ROOT = Path(__file__).resolve().parents[1]
FAMILIES = ("edgevit_xxs", "mobileformer_52m", "efficientformerv2_s0", "efficientformer_l1")
IMG = 64


def backbone(name: str) -> torch.nn.Module:
    """A fused feature backbone with non-trivial BatchNorm statistics (so fusion is not an identity)."""
    torch.manual_seed(0)
    model = yb.create(name, features_only=True, input_norm=True).eval()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return model.fuse()


def example(size: int = IMG) -> torch.Tensor:
    return torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(1))


# ------------------------------------------------------------------------------------ export formulations
@pytest.mark.parametrize("r", [2, 4])
def test_subsample_pooling_equals_strided_view(r):
    x = torch.randn(2, 5, 9, 14)
    assert torch.equal(F.max_pool2d(x, kernel_size=1, stride=r), x[:, :, ::r, ::r])
    assert torch.equal(subsample(x, r), x[:, :, ::r, ::r])


@pytest.mark.slow
def test_static_biases_equal_the_computed_ones():
    model = yb.create("efficientformerv2_s0", features_only=True, input_norm=True).eval()
    x = example(96)
    with torch.no_grad():
        expected = model(x)
        with static_biases(model, x):
            layers = [m for m in model.modules() if isinstance(m, OffsetBiasAttention)]
            assert layers and all(m.__dict__["_yolo_backbones_static_biases"].biases for m in layers)
            got = model(x)
            with pytest.raises(RuntimeError, match="another size"):
                model(example(128))
    assert all(torch.equal(a, b) for a, b in zip(got, expected))
    assert not any("_yolo_backbones_static_biases" in m.__dict__ for m in layers)  # gone after the context


@pytest.mark.slow
@pytest.mark.parametrize("name", FAMILIES)
def test_traced_graph_is_the_same_in_both_grad_modes(name):
    """torch.jit.trace's sanity check (pnnx runs it) re-traces under no_grad: the graphs must not differ, and the
    traced export formulation must compute what the eager model computes."""
    model, x = backbone(name), example()
    traced = torch.jit.trace(model, x, check_trace=True, strict=False)  # raises TracingCheckError on a mismatch
    with torch.no_grad():
        for a, b in zip(traced(x), model(x)):
            assert relative_error(a, b) < 1e-5


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mobileformer_52m", "efficientformer_l1"])
def test_export_copy_has_nchw_weights_and_flat_outputs(name):
    model, x = backbone(name), example()
    assert any(not p.is_contiguous() for p in model.parameters())  # fuse() lays weights out channels-last
    with export_ready(model, x) as ready:
        assert all(t.is_contiguous() for t in [*ready.parameters(), *ready.buffers()])
        out = ready(x)
    assert isinstance(out, tuple) and len(out) == 3
    with torch.no_grad():
        assert all(relative_error(a, b) < 1e-6 for a, b in zip(out, model(x)))


class _XnnpackUnfriendly(torch.nn.Module):
    """Every operator :mod:`yolo_backbones.deploy.xnnpack_graph` rewrites, in the shapes the backbones use."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = torch.nn.LayerNorm(12)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = x.contiguous(memory_format=torch.channels_last)  # as a backbone's inference_layout
        tokens = self.norm(x.flatten(2).transpose(1, 2))  # (1, 16, 12)
        q, k, v = tokens.reshape(1, 16, 3, 4).permute(2, 0, 1, 3).unbind(0)  # select
        a, b = tokens.split([5, 7], -1)
        c, d = tokens.chunk(2, 1)
        return (F.scaled_dot_product_attention(q, k, v), tokens @ w, tokens.unsqueeze(1) @ tokens.transpose(1, 2),
                a.repeat(1, 1, 2), b.repeat(1, 1, 1), c - d, F.max_pool2d(x, 1, 2), F.max_pool2d(x, 3, 1, 1))


def test_xnnpack_rewrites_keep_outputs_and_leave_none_of_the_original_operators():
    from yolo_backbones.deploy.xnnpack_graph import DECOMPOSITIONS, layout_copies_as_conversions, pool_1x1_as_average

    model, args = _XnnpackUnfriendly().eval(), (torch.randn(1, 12, 4, 4), torch.randn(12, 6))
    torch.nn.init.normal_(model.norm.weight)
    program = torch.export.export(model, args).run_decompositions(DECOMPOSITIONS)
    program = layout_copies_as_conversions(pool_1x1_as_average(program))
    targets = {str(n.target) for n in program.graph.nodes if n.op == "call_function"}
    for gone in ("layer_norm", "scaled_dot_product", "split", "chunk", "aten.select", "repeat", "matmul", "expand"):
        assert not any(gone in t for t in targets), (gone, sorted(targets))
    # the layout change is a conversion the XNNPACK partitioner takes, not a clone
    assert [str(n.target) for n in program.graph.nodes if "memory_format" in n.kwargs] == ["aten._to_copy.default"]
    pools = [n for n in program.graph.nodes if "pool" in str(n.target)]
    assert sorted(str(n.target).split(".")[1] for n in pools) == ["avg_pool2d", "max_pool2d"]  # SPPF-like pool kept
    with torch.no_grad():
        for got, want in zip(program.module()(*args), model(*args)):
            assert got.shape == want.shape and relative_error(got, want) < 1e-6


@pytest.mark.parametrize("name", ["mobileformer_52m", "efficientformerv2_s0"])  # EdgeViT folds the whole norm
def test_export_capture_subtracts_the_input_mean_before_the_layout_change(name):
    """A captured graph starts with the mean subtraction on the NCHW input, then the channels-last copy: on the NHWC
    copy the 3-channel broadcast ran 2x slower on XNNPACK (ExecuTorch, 320x320), and the outputs are the same."""
    model, x = yb.create(name, features_only=True, input_norm=True).eval().fuse(), torch.rand(1, 3, 64, 64)
    program = torch.export.export(model, (x,), strict=False)
    first = next(n for n in program.graph.nodes if n.op == "call_function")
    assert first.target is torch.ops.aten.sub.Tensor and first.args[0].op == "placeholder", first.format_node()
    with torch.no_grad():
        assert all(relative_error(a, b) < 1e-6 for a, b in zip(program.module()(x), model(x)))


@pytest.mark.parametrize("stride, bias", [((4, 4), True), ((2, 2), False), ((2, 3), True)])
def test_cell_spread_is_the_transposed_convolution(stride, bias):
    """A depth-wise ConvTranspose2d with kernel = stride (EdgeViT's local propagation) and its broadcast-multiply
    form: same parameters, same outputs; xnnpack_friendly rewrites only that geometry."""
    from yolo_backbones.deploy.xnnpack_graph import CellSpread, is_cell_spread, xnnpack_friendly

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.ConvTranspose2d(6, 6, stride, stride=stride, groups=6, bias=bias),
                                torch.nn.ConvTranspose2d(6, 6, 3, stride=2, groups=6),   # overlapping cells
                                torch.nn.ConvTranspose2d(6, 6, 2, stride=2, groups=3))  # two channels per group
    x = torch.randn(2, 6, 5, 7)
    with torch.no_grad():
        want = model[0](x)
        with xnnpack_friendly(model):
            got = model[0](x)
    assert [type(m) for m in model] == [CellSpread, torch.nn.ConvTranspose2d, torch.nn.ConvTranspose2d]
    assert not is_cell_spread(model[1]) and not is_cell_spread(model[2])
    assert got.shape == want.shape == (2, 6, 5 * stride[0], 7 * stride[1])
    assert relative_error(got, want) < 1e-6


class _TokenLinears(torch.nn.Module):
    """``Linear`` on a token grid (EdgeViT), as a module and as ``F.linear`` on a token sequence (Mobile-Former's
    fused token layers), and on a 2-D input: the shapes :mod:`yolo_backbones.deploy.ncnn_graph` rewrites."""

    def __init__(self) -> None:
        super().__init__()
        self.grid = torch.nn.Linear(6, 10)
        self.seq = torch.nn.Linear(6, 4)
        self.mlp = Mlp(6, 8)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        grid = self.grid(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)  # (1, 10, 4, 5)
        tokens = x.flatten(2).transpose(1, 2)  # (1, 20, 6)
        return (grid, F.linear(tokens, self.seq.weight, self.seq.bias), self.seq(tokens.flatten(0, 1)),
                self.mlp(x.permute(0, 2, 3, 1), residual=x.permute(0, 2, 3, 1)))


def test_ncnn_friendly_linear_is_the_same_function():
    from yolo_backbones.deploy.ncnn_graph import RowsMlp, TracedLinear, ncnn_friendly

    model, x = _TokenLinears().eval(), torch.randn(1, 6, 4, 5)
    with torch.no_grad():
        want = model(x)
        with ncnn_friendly(model):
            assert type(model.grid) is TracedLinear and type(model.seq) is TracedLinear and type(model.mlp) is RowsMlp
            traced = torch.jit.trace(model, x)
        ranks = [n.inputsAt(0).type().dim() for n in traced.inlined_graph.nodes() if n.kind() == "aten::linear"]
        got = traced(x)
    assert ranks == [2, 2, 2, 2, 2]  # each Linear on a 2-D matrix of rows (the grid and the sequence flattened)
    assert all(a.shape == b.shape and torch.allclose(a, b, atol=1e-6) for a, b in zip(got, want))


def _param_layers(param: Path) -> list[list[str]]:
    """The layer lines of an NCNN ``.param`` file, split into fields (type, name, counts, blobs, params)."""
    return [line.split() for line in param.read_text().splitlines()[2:]]


def _param_value(fields: list[str], key: str) -> str | None:
    """The value of parameter ``key`` (``0=...``) of a layer's fields from :func:`_param_layers`, or None."""
    params = fields[4 + int(fields[2]) + int(fields[3]):]  # after the input and output blob names
    return next((p.split("=", 1)[1] for p in params if p.split("=", 1)[0] == key), None)


def _shape_expression_reshapes(param: Path) -> list[str]:
    """Names of ``Reshape`` layers whose shape is an expression over other blobs (``6="0w,1h,1c"``): ncnn runs them
    element by element (deploy/ncnn_graph.py)."""
    return [f[1] for f in _param_layers(param) if f[0] == "Reshape" and any(p.startswith("6=") for p in f[4:])]


@pytest.mark.slow
def test_ncnn_linear_on_tokens_is_a_gemm_between_plain_reshapes(tmp_path):
    """pnnx's lowering of Linear on 3-D/4-D inputs (Reshape with a shape expression after each Gemm) must not come
    back: it made EdgeViT-XXS ~6x slower on NCNN."""
    _need("pnnx")
    from yolo_backbones.deploy import ncnn

    model, x = _TokenLinears().eval(), torch.randn(1, 6, 4, 5)
    folder = ncnn.export_ncnn(model, x, tmp_path / "m_ncnn_model")
    layers = _param_layers(folder / ncnn.PARAM)
    assert [f[0] for f in layers].count("Gemm") == 5 and not _shape_expression_reshapes(folder / ncnn.PARAM)
    with torch.no_grad():
        want = model(x)
    # pnnx gives the rows reshaped back a batch-less rank (an extra unit axis in ncnn): compare the values
    for got, ref in zip(ncnn.load_ncnn(folder)(x.numpy()), want):
        assert got.size == ref.numel() and relative_error(torch.from_numpy(got).reshape(ref.shape), ref) < 1e-5


# ------------------------------------------------------------------------------------------- metadata
@pytest.mark.parametrize("raw, expected", [
    ({"stride": 32, "names": {0: "a", 1: "b"}}, {"stride": 32, "names": {0: "a", 1: "b"}}),
    ({"stride": "32", "names": ["a", "b"]}, {"stride": 32, "names": {0: "a", 1: "b"}}),
    ({"names": {"0": "a"}, "other": object()}, {"names": {0: "a"}}),
    ({"names": "{0: 'a'}"}, {"names": {0: "a"}}),  # YOLOv5's ONNX metadata: a literal, parsed, never evaluated
    ({"names": ["../x"]}, {"names": {0: ".._x"}}),  # names become folders of --save-crop
])
def test_clean_metadata_accepts_plain_data(raw, expected):
    assert meta.clean_metadata(raw) == expected


@pytest.mark.parametrize("raw", [
    {"stride": "__import__('os').system('true')"}, {"stride": [32]}, {"stride": 0}, {"stride": True},
    {"names": "__import__('os').getcwd()"}, {"names": {0: ["a"]}}, {"names": {"x": "a"}},
    {"names": {i: "a" for i in range(100_001)}},
    ["stride", 32],
])
def test_clean_metadata_refuses_anything_else(raw):
    with pytest.raises(meta.MetadataError):
        meta.clean_metadata(raw)


def test_zip_metadata_is_parsed_never_evaluated(tmp_path):
    marker = tmp_path / "ran"
    model = tmp_path / "m.tflite"
    model.write_bytes(b"TFL3" + bytes(64))
    with zipfile.ZipFile(model, "a") as zf:
        zf.writestr("meta.txt", f"__import__('pathlib').Path({str(marker)!r}).touch()")
    with pytest.raises(meta.MetadataError, match="not plain data"):
        meta.read_zip_metadata(model)
    assert not marker.exists()
    clean = tmp_path / "c.tflite"
    clean.write_bytes(b"TFL3" + bytes(64))
    meta.append_zip_metadata(clean, {"stride": 16, "names": ["x"]}, "meta.txt")
    assert meta.read_zip_metadata(clean) == {"stride": 16, "names": {0: "x"}}


def test_yaml_metadata_refuses_python_tags_and_huge_files(tmp_path):
    bad = tmp_path / "metadata.yaml"
    bad.write_text("stride: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(meta.MetadataError):
        meta.read_yaml_metadata(bad)
    bad.write_text("names: [" + "'a', " * (meta.MAX_METADATA_BYTES // 4) + "]\n")
    with pytest.raises(meta.MetadataError, match="limit"):
        meta.read_yaml_metadata(bad)


# ------------------------------------------------------------------------------------- parity helper
def test_check_parity_names_the_worst_output():
    model = torch.nn.Conv2d(3, 4, 1)
    x = example()
    with torch.no_grad():
        good = model(x).numpy()
    assert check_parity(model, lambda a: [good], x) == [0.0]
    with pytest.raises(ParityError, match="output 0 differs"):
        check_parity(model, lambda a: [good * 1.01], x)
    with pytest.raises(ParityError, match="2 outputs"):
        check_parity(model, lambda a: [good, good], x)


# --------------------------------------------------------------------------------------- edge extra
def test_missing_edge_package_is_one_line_naming_the_extra():
    with pytest.raises(EdgeExtraMissingError) as info:
        import_edge("surely_not_installed_module_xyz", "NCNN export")
    text = str(info.value)
    assert "\n" not in text and "yolo-backbones[edge]" in text and "NCNN export" in text


class _FakeMNNNet:
    def __init__(self, biz: object) -> None:
        self.biz = biz

    def get_info(self) -> dict:
        return {"bizCode": self.biz}


@pytest.mark.parametrize("biz, marked", [
    ('{"stride": 32, "yolo_backbones": "0.2"}', True),
    ('{"stride": 32}', False),  # a stock ultralytics export keeps MNN's defaults
    ("{'yolo_backbones': 1}", False),  # not JSON: never evaluated
    ('{"yolo_backbones": "' + "x" * (meta.MAX_METADATA_BYTES + 1) + '"}', False),  # over the metadata size limit
    (None, False),
])
def test_mnn_plugin_marker_is_read_from_the_files_own_metadata(biz, marked):
    """The MNN loader reads its marker from the file's bizCode (JSON, bounded), not from the backend's applied
    metadata, which a host may filter."""
    from yolo_backbones.hosts.ultralytics.edge import _mnn_marked

    assert _mnn_marked(_FakeMNNNet(biz)) is marked


def test_ultralytics_check_requirements_raises_for_a_missing_edge_package(monkeypatch):
    pytest.importorskip("ultralytics")
    from ultralytics.utils import checks

    from yolo_backbones.hosts.ultralytics import offline

    monkeypatch.setattr(offline, "_EDGE_PACKAGES", offline._EDGE_PACKAGES | {"not-a-real-edge-pkg"})
    with pytest.raises(EdgeExtraMissingError, match=r"yolo-backbones\[edge\]"):
        checks.check_requirements("not-a-real-edge-pkg>=1")
    assert checks.check_requirements("pnnx==20260526")  # the extra's deliberate pnnx pin: no warning, no install


def test_huggingface_hub_satisfies_yolov5_and_has_what_yolov5_imports():
    """The extra keeps yolov5==7.0.14's huggingface-hub<0.25 (litert-torch's transformers is held at 4.4x)."""
    from packaging.requirements import Requirement

    hub = importlib.metadata.version("huggingface-hub")
    pins = [Requirement(r) for r in importlib.metadata.requires("yolov5") if r.lower().startswith("huggingface")]
    assert pins and all(p.specifier.contains(hub) for p in pins)
    # what YOLOv5 7.0.14 imports from it (utils/downloads.py, helpers.py) and the plugin's offline lookup uses
    from huggingface_hub import constants, create_repo, hf_hub_download, list_repo_files, snapshot_download, upload_file
    from huggingface_hub.utils._errors import RepositoryNotFoundError  # noqa: F401
    from huggingface_hub.utils._validators import HFValidationError  # noqa: F401

    assert callable(snapshot_download) and hasattr(constants, "HF_HUB_OFFLINE")
    assert all(callable(f) for f in (create_repo, hf_hub_download, list_repo_files, upload_file))


# ------------------------------------------------------------------------------------ conversions (slow)
def _need(module: str) -> None:
    pytest.importorskip(module, reason=f"{module} not installed (pip install 'yolo-backbones[edge]')")


@pytest.mark.slow
@pytest.mark.parametrize("name", FAMILIES)
def test_ncnn_matches_pytorch(name, tmp_path):
    _need("pnnx")
    from yolo_backbones.deploy import ncnn

    model, x = backbone(name), example()
    folder = ncnn.export_ncnn(model, x, tmp_path / "m_ncnn_model", {"stride": 32, "names": ["a"]})
    assert sorted(p.name for p in folder.iterdir()) == ["metadata.yaml", "model.ncnn.bin", "model.ncnn.param"]
    runner = ncnn.load_ncnn(folder)
    assert runner.metadata == {"stride": 32, "names": {0: "a"}}
    assert max(check_parity(model, runner, x)) < 1e-4  # float32 storage and arithmetic
    assert not _shape_expression_reshapes(folder / ncnn.PARAM)  # the slow lowering of Linear on tokens


@pytest.mark.slow
def test_litert_matches_pytorch(tmp_path):
    _need("litert_torch")
    from yolo_backbones.deploy import litert

    model, x = backbone("edgevit_xxs"), example()
    runner = litert.load_litert(litert.export_litert(model, x, tmp_path / "m.tflite", {"stride": 32, "names": ["a"]}))
    assert runner.input_shape == tuple(x.shape) and runner.metadata["stride"] == 32
    assert max(check_parity(model, runner, x)) < 1e-4
    with pytest.raises(ValueError, match="static shapes"):
        runner(np.zeros((1, 3, 2 * IMG, 2 * IMG), np.float32))
    # the local propagation is one broadcast multiply, not one TRANSPOSE_CONV per channel (xnnpack_friendly)
    from ai_edge_litert.interpreter import Interpreter

    ops = [o["op_name"] for o in Interpreter(model_path=str(tmp_path / "m.tflite"))._get_ops_details()]
    assert "TRANSPOSE_CONV" not in ops and len(ops) < 800, len(ops)  # 608 (~1650 without the rewrite)


@pytest.mark.slow
def test_executorch_matches_pytorch_and_runs_on_xnnpack(tmp_path):
    """yolo export format=executorch of yolo11_edgevit (LayerNorm, attention, strided sampling, q/k/v splits) goes
    through deploy.executorch's XNNPACK rewrites; AutoBackend runs the program at fp32 and matches PyTorch."""
    _need("executorch")
    pytest.importorskip("ultralytics")
    from conftest import run

    script = (f"import json, torch, yolo_backbones\nfrom ultralytics import YOLO\n"
              f"from ultralytics.nn.autobackend import AutoBackend\n"
              f"from yolo_backbones.deploy.executorch import portable_operators\n"
              f"from yolo_backbones.deploy.parity import relative_error\ntorch.manual_seed(0)\n"
              f"y = YOLO('yolo11_edgevit.yaml')\nf = y.export(format='executorch', imgsz={IMG})\n"
              f"x = torch.rand(1, 3, {IMG}, {IMG})\nref = y.model.fuse().eval()\n"
              f"with torch.no_grad(): r = ref(x)[0]\n"
              f"out = AutoBackend(f, device=torch.device('cpu'))(x)\n"
              f"out = out[0] if isinstance(out, (list, tuple)) else out\n"
              f"print('ERR', relative_error(out, r))\n"
              f"print('PORTABLE', json.dumps(portable_operators(f + '/model.pte')))\n")
    out = run([sys.executable, "-c", script], cwd=tmp_path).stdout
    assert float(out.split("ERR")[1].split()[0]) < 1e-4
    portable = json.loads(out.split("PORTABLE")[1].strip().splitlines()[0])
    heavy = [op for op in portable if any(k in op for k in ("conv", "mm", "linear", "matmul", "layer_norm", "pool"))]
    assert not heavy, portable  # convolutions, matrix products, LayerNorm and pooling all run on XNNPACK
    # left on the portable kernels: the head's 2 nearest upsamplings, its DFL softmax and its constants' dim-order
    # copies, not the input's layout change (ultralytics' own lowering of the same graph leaves 136 ops there:
    # LayerNorm, splits, expands, attention's NaN guards ...)
    assert sum(portable.values()) <= 8 and not any("clone" in op for op in portable), portable


@pytest.mark.slow
def test_coreml_converts_reloads_and_holds_only_core_ops(tmp_path):
    _need("coremltools")
    from yolo_backbones.deploy import coreml

    # EfficientFormerV2: gathered attention biases (served as constants) and the downsampling attention
    package = coreml.export_coreml(backbone("efficientformerv2_s0"), example(), tmp_path / "m.mlpackage",
                                   {"stride": 32, "names": ["a"]})
    ops = coreml.check_coreml(package)
    assert ops.get("conv", 0) > 10 and "upsample_bicubic" not in str(ops)


@pytest.mark.slow
def test_yolov5_export_ncnn_and_val_on_it(tmp_path):
    """export.py --include ncnn, then DetectMultiBackend (val.py's loader) on the folder matches PyTorch; a stranger's
    metadata.yaml in the folder goes through the metadata checks (names made safe, Python tags refused)."""
    _need("pnnx")
    from yolo_backbones.deploy.ncnn import load_ncnn

    from conftest import run

    script = (f"import sys, torch, yolo_backbones\nfrom yolov5.models.yolo import Model\ntorch.manual_seed(0)\n"
              f"m = Model({str(ROOT / 'models' / 'yolov5_mobileformer_52m.yaml')!r}).eval()\n"
              f"m.names = {{0: 'a', 1: 'b'}}\ntorch.save({{'model': m, 'epoch': -1}}, 'best.pt')\n")
    run([sys.executable, "-c", script], cwd=tmp_path)
    run([sys.executable, str(ROOT / "export.py"), "--weights", "best.pt", "--img", str(IMG), "--include", "ncnn"],
        cwd=tmp_path)
    folder = tmp_path / "best_ncnn_model"
    assert load_ncnn(folder).metadata == {"stride": 32, "names": {0: "a", 1: "b"}}
    check = (f"import torch, yolo_backbones\nfrom yolov5.models.common import DetectMultiBackend\n"
             f"from yolov5.models.experimental import attempt_load\n"
             f"from yolo_backbones.deploy.parity import relative_error\n"
             f"ref = attempt_load('best.pt', device=torch.device('cpu'), inplace=True, fuse=True).eval()\n"
             f"be = DetectMultiBackend('best_ncnn_model', device=torch.device('cpu'))\n"
             f"x = torch.rand(1, 3, {IMG}, {IMG})\n"
             f"with torch.no_grad(): r = ref(x)[0]\n"
             f"print('ERR', relative_error(be(x), r), be.stride, be.names)\n"
             # the same folder with a stranger's metadata: names made file-name safe, a Python tag refused
             f"import shutil, yaml\nshutil.copytree('best_ncnn_model', 'evil_ncnn_model')\n"
             f"meta = open('evil_ncnn_model/metadata.yaml', 'w')\n"
             f"yaml.safe_dump({{'stride': 32, 'names': {{0: '../../x', 1: 'b'}}}}, meta)\nmeta.close()\n"
             f"print('EVIL', DetectMultiBackend('evil_ncnn_model', device=torch.device('cpu')).names)\n"
             f"with open('evil_ncnn_model/metadata.yaml', 'w') as meta:\n"
             f"    meta.write(\"stride: !!python/object/apply:os.system ['touch pwned']\")\n"
             f"try: DetectMultiBackend('evil_ncnn_model', device=torch.device('cpu'))\n"
             f"except Exception as e: print('REFUSED', type(e).__name__)\n")
    out = run([sys.executable, "-c", check], cwd=tmp_path).stdout
    err = float(out.split("ERR")[1].split()[0])
    assert err < 1e-4 and "{0: 'a', 1: 'b'}" in out
    assert "EVIL {0: '.._.._x', 1: 'b'}" in out and "REFUSED MetadataError" in out and not (tmp_path / "pwned").exists()


@pytest.mark.slow
def test_ultralytics_yolo_export_ncnn_and_autobackend(tmp_path):
    """yolo export format=ncnn of a plugin YAML, with the plugin's NCNN rewrites (plain reshapes around token Linears,
    Mobile-Former's channel multipliers as plain depth-wise convs); AutoBackend runs it at fp32 with only the model's
    outputs; a stranger's metadata.yaml in the folder goes through the metadata checks."""
    _need("pnnx")
    pytest.importorskip("ultralytics")
    from conftest import run

    script = (f"import torch, yolo_backbones\nfrom ultralytics import YOLO\n"
              f"from ultralytics.nn.autobackend import AutoBackend\n"
              f"from yolo_backbones.deploy.parity import relative_error\ntorch.manual_seed(0)\n"
              f"y = YOLO('yolo11_mobileformer_52m.yaml')\nf = y.export(format='ncnn', imgsz={IMG})\n"
              f"x = torch.rand(1, 3, {IMG}, {IMG})\nref = y.model.fuse().eval()\n"
              f"with torch.no_grad(): r = ref(x)[0]\n"
              f"be = AutoBackend(f, device=torch.device('cpu'))\nout = be(x)\n"
              f"out = out[0] if isinstance(out, (list, tuple)) else out\n"
              f"print('ERR', relative_error(out, r), be.backend.net.opt.use_fp16_storage)\n"
              # a stranger's metadata.yaml: names made file-name safe, unknown keys dropped, a Python tag refused
              f"import yaml\nmeta = f + '/metadata.yaml'\nd = yaml.safe_load(open(meta))\n"
              f"d.update(names={{0: '../../x'}}, pt_path='/etc')\nyaml.safe_dump(d, open(meta, 'w'))\n"
              f"be = AutoBackend(f, device=torch.device('cpu'))\nprint('EVIL', be.names, hasattr(be, 'pt_path'))\n"
              f"open(meta, 'a').write(\"x: !!python/object/apply:os.system ['touch pwned']\\n\")\n"
              f"try: AutoBackend(f, device=torch.device('cpu'))\n"
              f"except Exception as e: print('REFUSED', type(e).__name__)\n")
    out = run([sys.executable, "-c", script], cwd=tmp_path).stdout
    err, fp16 = out.split("ERR")[1].split()[:2]
    assert float(err) < 1e-4 and fp16 == "False"
    param = next(tmp_path.rglob("*_ncnn_model")) / "model.ncnn.param"
    assert not _shape_expression_reshapes(param)
    depthwise = [f for f in _param_layers(param) if f[0] == "ConvolutionDepthWise"]
    assert depthwise and all(_param_value(f, "0") == _param_value(f, "7") for f in depthwise)  # outputs == groups
    assert "EVIL {0: '.._.._x'} False" in out and "REFUSED MetadataError" in out and not (tmp_path / "pwned").exists()


@pytest.mark.slow
def test_ultralytics_ncnn_export_of_edgevit_has_no_slow_linear(tmp_path):
    """yolo export format=ncnn runs pnnx inside the plugin's NCNN rewrites, as export.py --include ncnn does: without
    them EdgeViT's token-grid Linears come back as shape-expression Reshapes (yolo11_edgevit at 320: 192 vs 32 ms)."""
    _need("pnnx")
    pytest.importorskip("ultralytics")
    from conftest import run

    script = ("import torch, yolo_backbones\nfrom ultralytics import YOLO\ntorch.manual_seed(0)\n"
              f"print('FOLDER', YOLO('yolo11_edgevit.yaml').export(format='ncnn', imgsz={IMG}))\n")
    folder = tmp_path / run([sys.executable, "-c", script], cwd=tmp_path).stdout.split("FOLDER")[1].split()[0]
    layers = _param_layers(folder / "model.ncnn.param")
    assert sum(f[0] == "Gemm" for f in layers) > 10  # the token Linears, as plain Gemms
    assert not _shape_expression_reshapes(folder / "model.ncnn.param")


@pytest.mark.slow
def test_ultralytics_litert_export_of_edgevit_has_no_transposed_convolution(tmp_path):
    """yolo export format=litert runs litert-torch inside the plugin's XNNPACK rewrites, as export.py --include
    tflite does: EdgeViT's depth-wise transposed convolution becomes one multiply, not a TRANSPOSE_CONV per channel."""
    _need("litert_torch")
    pytest.importorskip("ultralytics")
    from ai_edge_litert.interpreter import Interpreter

    from conftest import run

    script = ("import torch, yolo_backbones\nfrom ultralytics import YOLO\ntorch.manual_seed(0)\n"
              f"print('FILE', YOLO('yolo11_edgevit.yaml').export(format='litert', imgsz={IMG}))\n")
    file = tmp_path / run([sys.executable, "-c", script], cwd=tmp_path).stdout.split("FILE")[1].split()[0]
    ops = [o["op_name"] for o in Interpreter(model_path=str(file))._get_ops_details()]
    assert "CONV_2D" in ops and "TRANSPOSE_CONV" not in ops, sorted(set(ops))
