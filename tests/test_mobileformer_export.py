"""Mobile-Former's export formulations (issue 21, edge engines): the blocks of a fused backbone captured for export
(``torch.export``, ``torch.jit.trace``) compute the reference function in far fewer operators.

Fast tests compare each formulation with the block's reference math (float rounding only) on non-trivial weights
(random LayerNorm affines, biases and gates, so no term is an identity) and check the capture uses it (operator
counts of the captured graph); a slow test converts a backbone to LiteRT and checks the XNNPACK-relevant counts.
"""
from __future__ import annotations

import collections
import copy

import numpy as np
import pytest
import torch
from torch import nn

import yolo_backbones as yb
from yolo_backbones.core.inference.context import capturing_for
from yolo_backbones.core.mobileformer import fused
from yolo_backbones.core.mobileformer.model import (
    ChannelShuffle,
    DnaBlock,
    DnaBlock3,
    Global2Local,
    GlobalBlock,
    Local2Global,
)
from yolo_backbones.core.mobileformer.ncnn_bridges import global_to_local_ncnn, local_to_global_ncnn
from yolo_backbones.deploy.parity import relative_error

torch.set_num_threads(1)


def _randomise(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial weights everywhere the export formulations touch (BN statistics, LN affines, Linear biases)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5, generator=g)
                m.running_var.uniform_(0.5, 2.0, generator=g)
            elif isinstance(m, nn.LayerNorm):
                m.weight.normal_(1.0, 0.3, generator=g)
                m.bias.normal_(0.0, 0.3, generator=g)
            elif isinstance(m, nn.Linear):
                m.weight.normal_(0.0, 0.1, generator=g)
                m.bias.normal_(0.0, 0.3, generator=g)
            elif isinstance(m, nn.Embedding):
                m.weight.normal_(generator=g)
    return model


def backbone(variant: str = "52m") -> nn.Module:
    torch.manual_seed(0)
    return _randomise(yb.create(f"mobileformer_{variant}", features_only=True, input_norm=True).eval())


def _strip_export_constants(model: nn.Module) -> nn.Module:
    """``model`` without the export constants: what a model fused by an older version holds (reference math)."""
    for m in model.modules():
        for name in [n for n in m._buffers if n.startswith("export_")]:
            delattr(m, name)
    return model


def _op_histogram(model: nn.Module, x: torch.Tensor) -> collections.Counter:
    program = torch.export.export(model, (x,)).run_decompositions()  # core ATen, as the converters see it
    names = [str(n.target) for n in program.graph.nodes if n.op == "call_function"]
    return collections.Counter(t.split(".")[1] if t.startswith("aten.") else t for t in names)


# ---------------------------------------------------------------------------------------- block by block
@pytest.mark.parametrize("channels, tokens", [(12, 3), (48, 6)])  # narrow and wide heads; 52M and 294M tokens
def test_bridge_and_former_formulations_equal_the_reference(channels, tokens):
    d = 128 if tokens == 3 else 192
    torch.manual_seed(channels)
    parts = [_randomise(m, channels).eval() for m in (Local2Global(channels, d), GlobalBlock(d),
                                                      Global2Local(channels, d))]
    l2g, former, g2l = (copy.deepcopy(m) for m in parts)
    container = nn.ModuleList([l2g, former, g2l])
    with torch.no_grad():
        fused.prepare_export(container, tokens)
        x, t = torch.randn(2, channels, 7, 9), torch.randn(2, tokens, d)
        pairs = [(fused.local_to_global_export(l2g, x, t), parts[0](x, t)),
                 (fused.global_block_export(former, t), parts[1](t)),
                 (fused.global_to_local_export(g2l, x, t), parts[2](x, t))]
    for got, want in pairs:
        assert got.shape == want.shape
        assert relative_error(got, want) < 2e-6


@pytest.mark.parametrize("channels, tokens", [(12, 3), (48, 6)])
def test_ncnn_bridges_equal_the_reference(channels, tokens):
    d = 128 if tokens == 3 else 192
    torch.manual_seed(channels)
    l2g, g2l = (_randomise(m, channels).eval() for m in (Local2Global(channels, d), Global2Local(channels, d)))
    with torch.no_grad():
        x, t = torch.randn(2, channels, 7, 9), torch.randn(2, tokens, d)
        pairs = [(local_to_global_ncnn(l2g, x, t), l2g(x, t)), (global_to_local_ncnn(g2l, x, t), g2l(x, t))]
    for got, want in pairs:
        assert got.shape == want.shape
        assert relative_error(got, want) < 2e-6


@pytest.mark.parametrize("form", [fused.XNNPACK_CAPTURE, fused.EXECUTORCH_CAPTURE, fused.NCNN_CAPTURE],
                         ids=["xnnpack", "executorch", "ncnn"])
@pytest.mark.parametrize("cls, args", [(DnaBlock, (24, 24, 1, 4)), (DnaBlock3, (24, 48, 2, 6, 4))])
def test_block_formulations_equal_the_reference(cls, args, form):
    torch.manual_seed(1)
    ref = _randomise(cls(*args, token_dim=128).eval(), 1)
    block = copy.deepcopy(ref)
    with torch.no_grad():
        from yolo_backbones.core.inference.fuse import fuse_backbone

        fuse_backbone(block)
        fused.prepare_export(block, 3)
        x, t = torch.randn(2, args[0], 10, 12), torch.randn(2, 3, 128)
        export = fused.dna_block_export if cls is DnaBlock else fused.dna_block3_export
        (y, tokens), (y_ref, tokens_ref) = export(block, x, t, form), ref(x, t)
    if cls is DnaBlock3:  # x6 then x4: XNNPACK splits the x4 conv only, NCNN both (slope rows of its own)
        assert hasattr(block.fused_slopes, "export_w2") and hasattr(block.fused_slopes, "export_ncnn_w2")
    assert relative_error(tokens, tokens_ref) < 2e-6
    assert relative_error(y, y_ref) < 2e-6


@pytest.mark.parametrize("stride", [1, 2])
def test_lite_block_formulation_equals_the_reference(stride):
    from yolo_backbones.core.inference.fuse import fuse_backbone
    from yolo_backbones.core.mobileformer.model import LiteBlock

    torch.manual_seed(2)
    ref = _randomise(LiteBlock(16, 16, stride, 3).eval(), 2)
    block = copy.deepcopy(ref)
    with torch.no_grad():
        fuse_backbone(block)
        fused.prepare_export(block, 3)
        x = torch.randn(2, 16, 9, 11)
        (y, _), (y_ref, _) = fused.lite_block_export(block, x, None), ref(x, None)
    assert hasattr(block.conv[0], "export_copy2_weight") and relative_error(y, y_ref) < 2e-6


def _conv_nodes(program: torch.export.ExportedProgram) -> list[torch.fx.Node]:
    return [n for n in program.graph.nodes if n.op == "call_function" and "convolution" in str(n.target)]


def _multipliers(program: torch.export.ExportedProgram) -> list[int]:
    """Channel multiplier of every depth-wise conv (groups > 1) of a captured graph."""
    out = []
    for n in _conv_nodes(program):
        out_channels, in_per_group = n.args[1].meta["val"].shape[:2]
        if n.args[8] > 1:
            assert in_per_group == 1, n
            out.append(out_channels // n.args[8])
    return out


def test_capture_splits_channel_multipliers_into_plain_depthwise_convs():
    """XNNPACK runs a depth-wise conv with a channel multiplier as a grouped convolution (2-3x slower than the
    plain depth-wise convs of the export formulation); up to 4 copies (one XNNPACK concatenation) are split."""
    model, x = backbone().fuse(), torch.rand(1, 3, 64, 64)
    reference = _strip_export_constants(copy.deepcopy(model))
    with torch.no_grad():
        new = _multipliers(torch.export.export(model, (x,)).run_decompositions())
        old = _multipliers(torch.export.export(reference, (x,)).run_decompositions())
    # 52M: the lite block (x3) and every DnaBlock3's second conv (x4) are split, DnaBlock3's first (x6) is not
    assert sorted(m for m in old if m > 1) == [3, 4, 4, 4, 6, 6, 6], old
    assert sorted(m for m in new if m > 1) == [6, 6, 6], new
    assert new.count(1) == old.count(1) + 3 + 3 * 4


class _ConvLog(torch.overrides.TorchFunctionMode):
    """Records ``(out_channels // groups, groups)`` of every conv, and the size of every permuted / transposed
    tensor whose result is not a matrix-product operand (those are a flag of the product in ncnn and pnnx folds
    them: ``MatMul`` with ``transB``)."""

    def __init__(self) -> None:
        super().__init__()
        self.convs: list[tuple[int, int]] = []
        self._permutes: list[tuple[torch.Tensor, int]] = []
        self._operands: set[int] = set()

    @property
    def permuted(self) -> list[int]:
        return [n for t, n in self._permutes if id(t) not in self._operands]

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func is torch.nn.functional.conv2d:
            groups = args[6] if len(args) > 6 else kwargs.get("groups", 1)
            self.convs.append((args[1].shape[0] // groups, groups))
        elif func in (torch.Tensor.permute, torch.Tensor.transpose, torch.permute, torch.transpose):
            self._permutes.append((out, int(args[0].numel())))  # the result is kept: its id stays unique
        elif func in (torch.matmul, torch.Tensor.matmul, torch.bmm):
            self._operands.update(id(a) for a in args)
        return out


def _ncnn_trace_log(model: nn.Module, x: torch.Tensor) -> tuple[_ConvLog, torch.Tensor]:
    """The calls of a TorchScript trace of ``model`` inside the NCNN exporter's capture context, and its output."""
    log = _ConvLog()
    with torch.no_grad(), capturing_for("ncnn"), log:
        traced = torch.jit.trace(model, x, check_trace=False, strict=False)
    with torch.no_grad():
        return log, traced(x)


def test_ncnn_capture_splits_every_multiplier_and_permutes_no_map():
    """A pnnx (NCNN) capture splits every depth-wise conv with a channel multiplier, x6 included (ncnn runs a
    multiplier as one small convolution per group), and its bridges permute only tokens, never a map; the
    TorchScript captures of other exporters (ONNX, Core ML) keep the reference math."""
    model, x = backbone().fuse(), torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        want = model(x)
    log, got = _ncnn_trace_log(model, x)
    plain = _ConvLog()
    with torch.no_grad(), plain:
        torch.jit.trace(model, x, check_trace=False, strict=False)
    multipliers = sorted(m for m, g in plain.convs if g > 1 and m > 1)
    assert multipliers == [3, 4, 4, 4, 6, 6, 6], plain.convs  # the reference capture (52M)
    assert not [m for m, g in log.convs if g > 1 and m > 1], log.convs
    tokens = 3 * 128  # 52M: 3 tokens of width 128; what is larger is a map
    shuffles = sum(isinstance(m, ChannelShuffle) for m in model.modules())  # one transpose each, in the convs
    maps_ncnn, maps_plain = (sum(p > tokens for p in log_.permuted) for log_ in (log, plain))
    assert maps_ncnn == shuffles and maps_plain >= shuffles + 2 * 8, (maps_ncnn, maps_plain, shuffles)  # 8 blocks
    for a, b in zip(got, want):
        assert relative_error(a, b) < 1e-5


def test_executorch_capture_permutes_maps_less_than_half_as_often():
    """ExecuTorch's capture reads each bridge's map in NCHW order (the XNNPACK delegate runs each permute of a
    channels-last map as a transpose); LiteRT's keeps the NHWC pixel views, free there. Same outputs."""
    from yolo_backbones.deploy.xnnpack_graph import executorch_friendly, xnnpack_friendly

    model, x = backbone().fuse(), torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        want = model(x)
    counts = {}
    for name, rewrites in (("litert", xnnpack_friendly), ("executorch", executorch_friendly)):
        ready = copy.deepcopy(model)
        with torch.no_grad(), rewrites(ready):
            program = torch.export.export(ready, (x,), strict=False)
        counts[name] = sum(n.target in (torch.ops.aten.permute.default, torch.ops.aten.transpose.int)
                           and n.meta["val"].numel() > 3 * 128 for n in program.graph.nodes)  # larger than the tokens
        with torch.no_grad():
            assert all(relative_error(a, b) < 1e-5 for a, b in zip(program.module()(x), want)), name
    assert 0 < 2 * counts["executorch"] <= counts["litert"], counts  # 52M at 64 px: 9 against 22


def test_fused_state_dict_holds_no_export_constants():
    """The export constants are derived (non-persistent): fused checkpoints keep their keys."""
    model = backbone().fuse()
    names = [n for m in model.modules() for n in m._buffers if n.startswith("export_")]
    assert len(names) > 50
    assert not any("export_" in k for k in model.state_dict())


# ------------------------------------------------------------------------------------------- captures
@pytest.mark.slow
def test_captured_backbone_equals_eager_and_uses_fewer_operators():
    model, x = backbone().fuse(), torch.rand(2, 3, 96, 128, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want = model(x)
        program = torch.export.export(model, (x,))
        got = program.module()(x)
        traced = torch.jit.trace(model, x, check_trace=False, strict=False)(x)  # the NCNN / ONNX capture
    for a, b, c in zip(got, traced, want):
        assert relative_error(a, c) < 1e-5 and relative_error(b, c) < 1e-5
    new = _op_histogram(model, x)
    old = _op_histogram(_strip_export_constants(copy.deepcopy(model)), x)
    # 52M (8 blocks with tokens), ATen core operators: 1619 -> 1139 (litert-torch then removes most views)
    assert sum(new.values()) < 0.75 * sum(old.values()), (sum(new.values()), sum(old.values()))
    assert new["view"] + new["permute"] + new["expand"] < 0.75 * (old["view"] + old["permute"] + old["expand"])
    for gone in ("native_layer_norm", "expand", "any", "where", "logical_not", "split_with_sizes"):
        assert not new[gone], (gone, new)  # LayerNorm, attention's NaN guards and broadcasts, hyper-function chunks


@pytest.mark.slow
def test_litert_graph_is_small_and_fully_delegated(tmp_path):
    pytest.importorskip("litert_torch", reason="litert-torch not installed (pip install 'yolo-backbones[edge]')")
    from ai_edge_litert.interpreter import Interpreter

    from yolo_backbones.deploy import litert
    from yolo_backbones.deploy.parity import check_parity

    model, x = backbone().fuse(), torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(3))
    file = litert.export_litert(model, x, tmp_path / "m.tflite")
    assert max(check_parity(model, litert.load_litert(file), x)) < 1e-5
    interpreter = Interpreter(model_path=str(file), num_threads=1)
    ops = collections.Counter(o["op_name"] for o in interpreter._get_ops_details())
    # the reference capture of this backbone: 1177 operators, 310 RESHAPE + 113 TRANSPOSE; this one 815, 111 + 48
    assert sum(ops.values()) < 850 and ops["RESHAPE"] + ops["TRANSPOSE"] < 200, ops
    interpreter.allocate_tensors()  # applies XNNPACK: one partition means every operator was delegated
    delegates = [o for o in interpreter._get_ops_details() if o["op_name"] == "DELEGATE"]
    assert len(delegates) == 1
    out = interpreter.get_output_details()
    assert len(out) == 3 and all(np.prod(o["shape"]) > 0 for o in out)


@pytest.mark.slow
def test_executorch_program_runs_the_bridges_on_xnnpack(tmp_path):
    pytest.importorskip("executorch", reason="executorch not installed (pip install 'yolo-backbones[edge]')")
    from yolo_backbones.deploy import executorch as et
    from yolo_backbones.deploy.parity import check_parity

    model, x = backbone().fuse(), torch.rand(1, 3, 96, 96, generator=torch.Generator().manual_seed(4))
    file = et.export_executorch(model, x, tmp_path / "m.pte")
    assert max(check_parity(model, et.load_executorch(file), x)) < 1e-5
    portable = et.portable_operators(file)
    # the reference capture leaves 53 layout copies on the portable kernels (48 dim-order conversions); the head
    # repeats, head sums and softmaxes of the export formulations and the input's layout change must all be
    # delegated (left: the tokens' unsqueeze)
    assert not any(k in op for op in portable for k in ("cat", "sum", "softmax", "bmm", "linear", "mm")), portable
    assert sum(portable.values()) <= 1, portable


def test_bridge_on_a_large_map_sums_pixels_in_row_blocks():
    """A Mobile->Former bridge over >= 4096 pixels sums its weighted pixels in 8 row blocks (one batched product,
    XNNPACK splits that over 2 threads), and still equals the reference."""
    torch.manual_seed(3)
    ref = _randomise(Local2Global(16, 192).eval(), 3)
    l2g = copy.deepcopy(ref)
    with torch.no_grad():
        fused.prepare_export(nn.ModuleList([l2g]), 6)
        x, t = torch.randn(2, 16, 64, 72), torch.randn(2, 6, 192)
        got, want = fused.local_to_global_export(l2g, x, t), ref(x, t)
        weights, pixels = torch.rand(2, 12, 64 * 72).softmax(-1), torch.randn(2, 64 * 72, 16)
        sums = fused._pixel_sums(weights, pixels)
        program = torch.export.export(_Bridge(l2g), (x, t)).run_decompositions()
    assert relative_error(got, want) < 2e-6
    assert relative_error(sums, torch.bmm(weights, pixels)) < 1e-6
    batch_sizes = [n.meta["val"].shape[0] for n in program.graph.nodes if n.target == torch.ops.aten.bmm.default]
    assert 2 * 8 in batch_sizes  # the pixel sums: 8 row blocks per image


class _Bridge(nn.Module):
    def __init__(self, l2g: nn.Module) -> None:
        super().__init__()
        self.l2g = l2g

    def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        return fused.local_to_global_export(self.l2g, x, tokens)
