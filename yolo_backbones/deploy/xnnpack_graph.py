"""Rewrites of a captured graph into operators XNNPACK takes, with the same outputs.

ExecuTorch's XNNPACK partitioner has no LayerNorm, scaled-dot-product attention, split/chunk, broadcast ``expand``
or 1x1 max pooling; each such node runs on ExecuTorch's portable (reference) kernels and cuts the graph into
another delegate partition (EdgeViT-XXS: 50 partitions, minutes of lowering). :data:`DECOMPOSITIONS`, applied
with ``ExportedProgram.run_decompositions`` before lowering, spells them with operators it takes:

* ``layer_norm`` -> mean (as a 4-D global average pooling), subtract, square, mean, ``rsqrt``, multiply, add;
* ``scaled_dot_product_attention`` (no dropout) -> ``bmm``, ``softmax``, ``bmm`` over flattened batch dims;
* ``matmul`` -> ``mm`` / ``bmm`` with missing batch dims as views (ATen's own decomposition expands both operands);
* ``split`` / ``split_with_sizes`` / ``chunk`` / ``select`` -> unit-step slices (and views);
* ``repeat`` -> concatenation (a copy when nothing repeats, e.g. Mobile-Former's tokens at batch 1);
* ``sum`` over one short dim (Mobile-Former's heads and tokens, up to 8) -> unit-step slices and additions (the
  partitioner has no sum); longer or several dims -> ``mean`` times the element count;
* ``max_pool2d`` with a 1x1 window (strided token sampling, see ``core/layers/layout.subsample``) -> 1x1 average
  pooling, which returns the same elements (XNNPACK's max pooling needs stride <= window):
  :func:`pool_1x1_as_average`, a node rewrite, since other max poolings must stay as they are;
* ``clone`` to a memory format (the backbones' channels-last input, ``core/input.py``) -> ``_to_copy`` to it:
  :func:`layout_copies_as_conversions`. ExecuTorch ran the clone on its portable kernels (0.7 ms for a 320x320
  input, 3 % of Mobile-Former-294M's detector); XNNPACK runs the conversion as one transpose.

Both XNNPACK converters (LiteRT and ExecuTorch) also get :func:`xnnpack_friendly`, a module rewrite (ExecuTorch
through :func:`executorch_friendly`, which also selects blocks' ExecuTorch formulations): a depth-wise
``ConvTranspose2d`` with kernel = stride (EdgeViT's local propagation) as :class:`CellSpread`, a broadcast multiply.
litert-torch lowered it to one ``TRANSPOSE_CONV`` per channel between ``SLICE`` and ``CONCATENATION`` ops (540 + 570
of EdgeViT-XXS's 1804 ops at 320x320) and XNNPACK's deconvolution is slow for it: EdgeViT-XXS's stride-4 global
block ran 2.2x faster on LiteRT and 1.7x on ExecuTorch with the rewrite.

Outputs equal the original operators' up to float rounding (~1e-7 relative; tested in tests/test_edge_export.py).
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from ..core.inference.context import capturing_for

__all__ = ["CellSpread", "DECOMPOSITIONS", "executorch_friendly", "is_cell_spread", "layout_copies_as_conversions",
           "pool_1x1_as_average", "xnnpack_friendly"]

aten = torch.ops.aten


def _mean_last(x: torch.Tensor, n: int) -> torch.Tensor:
    """Mean over the last ``n`` dims (kept as size 1), as the mean over the two innermost dims of a 4-D tensor:
    the only mean XNNPACK takes (its global average pooling)."""
    inner = math.prod(x.shape[x.dim() - n:])
    return x.reshape(-1, 1, 1, inner).mean((2, 3), keepdim=True).reshape(*x.shape[:x.dim() - n], *[1] * n)


def _layer_norm(x: torch.Tensor, normalized_shape: Sequence[int], weight: torch.Tensor | None = None,
                bias: torch.Tensor | None = None, eps: float = 1e-5, cudnn_enable: bool = True) -> torch.Tensor:
    n = len(normalized_shape)
    centred = x - _mean_last(x, n)
    y = centred * torch.rsqrt(_mean_last(centred * centred, n) + eps)
    if weight is not None:
        y = y * weight
    return y + bias if bias is not None else y


def _batched(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` for operands with the same batch dims (>= 3-D), as one ``bmm``."""
    batch = a.shape[:-2]
    out = torch.bmm(a.reshape(-1, *a.shape[-2:]), b.reshape(-1, *b.shape[-2:]))
    return out.reshape(*batch, a.shape[-2], b.shape[-1])


def _matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    if a.dim() == 1:
        return _matmul(a.unsqueeze(0), b).squeeze(-2)
    if b.dim() == 1:
        return _matmul(a, b.unsqueeze(-1)).squeeze(-1)
    if b.dim() == 2:
        return torch.mm(a.reshape(-1, a.shape[-1]), b).reshape(*a.shape[:-1], b.shape[-1])
    rank = max(a.dim(), b.dim())  # missing leading batch dims as size-1 views, not expands
    a, b = a.reshape(*[1] * (rank - a.dim()), *a.shape), b.reshape(*[1] * (rank - b.dim()), *b.shape)
    batch = torch.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    if a.shape[:-2] != batch:  # true broadcasting (batch > 1 against 1) needs the expand XNNPACK does not take
        a = a.expand(*batch, *a.shape[-2:])
    if b.shape[:-2] != batch:
        b = b.expand(*batch, *b.shape[-2:])
    return _batched(a, b)


def _attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask: torch.Tensor | None = None,
               dropout_p: float = 0.0, is_causal: bool = False, scale: float | None = None,
               enable_gqa: bool = False) -> torch.Tensor:
    if dropout_p or enable_gqa or q.shape[:-2] != k.shape[:-2]:
        raise NotImplementedError("ExecuTorch export: attention with dropout, grouped queries or broadcast batch "
                                  "dims has no XNNPACK formulation here")
    scores = _batched(q * (scale if scale is not None else 1.0 / math.sqrt(q.shape[-1])), k.transpose(-2, -1))
    if is_causal:
        keep = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool, device=q.device).tril()
        scores = scores.masked_fill(~keep, float("-inf"))
    if attn_mask is not None:
        scores = scores.masked_fill(~attn_mask, float("-inf")) if attn_mask.dtype == torch.bool else \
            scores + attn_mask
    return _batched(scores.softmax(-1), v)


def _select(x: torch.Tensor, dim: int, index: int) -> torch.Tensor:
    dim, index = dim % x.dim(), index % x.shape[dim]
    return x.narrow(dim, index, 1).reshape([*x.shape[:dim], *x.shape[dim + 1:]])


def _repeat(x: torch.Tensor, repeats: Sequence[int]) -> torch.Tensor:
    x = x.reshape(*[1] * (len(repeats) - x.dim()), *x.shape)
    if all(r == 1 for r in repeats):
        return x.clone()
    for dim, r in enumerate(repeats):
        if r > 1:
            x = torch.cat([x] * r, dim)
    return x


_SHORT_SUM = 8  # longest dim whose sum is spelled as slices and additions


def _sum(x: torch.Tensor, dims: Sequence[int] | None = None, keepdim: bool = False, *,
         dtype: torch.dtype | None = None) -> torch.Tensor:
    dims = list(range(x.dim())) if dims is None or len(dims) == 0 else [d % x.dim() for d in dims]
    if dtype is not None:
        x = x.to(dtype)
    if len(dims) == 1 and x.shape[dims[0]] <= _SHORT_SUM:
        d = dims[0]
        out = x.narrow(d, 0, 1)
        for i in range(1, x.shape[d]):
            out = out + x.narrow(d, i, 1)
        return out if keepdim else out.view(*x.shape[:d], *x.shape[d + 1:])  # view_copy, not squeeze_copy
    # another operator: the decomposition must not call the one it replaces
    return x.mean(dims, keepdim=keepdim) * math.prod(x.shape[d] for d in dims)


def _split_with_sizes(x: torch.Tensor, sizes: Sequence[int], dim: int = 0) -> list[torch.Tensor]:
    out, start = [], 0
    for size in sizes:
        out.append(x.narrow(dim, start, size))
        start += size
    return out


def _split(x: torch.Tensor, size: int, dim: int = 0) -> list[torch.Tensor]:
    total = x.shape[dim]
    return _split_with_sizes(x, [min(size, total - s) for s in range(0, total, size)], dim)


def _chunk(x: torch.Tensor, chunks: int, dim: int = 0) -> list[torch.Tensor]:
    return _split(x, -(-x.shape[dim] // chunks), dim)


def pool_1x1_as_average(program: torch.export.ExportedProgram) -> torch.export.ExportedProgram:
    """Turn every 1x1-window ``max_pool2d`` node (strided sampling) of ``program`` into a 1x1 ``avg_pool2d``, in
    place; other max poolings (YOLOv5's SPPF) stay as they are, for XNNPACK's max pooling."""
    graph = program.graph_module.graph
    for node in graph.nodes:
        if node.op != "call_function" or node.target is not aten.max_pool2d.default:
            continue
        x, kernel, *rest = node.args
        stride, padding, _dilation, ceil_mode = (list(rest) + [[], [0, 0], [1, 1], False][len(rest):])[:4]
        if list(kernel) in ([1], [1, 1]) and all(p == 0 for p in padding) and not ceil_mode:
            node.target = aten.avg_pool2d.default
            node.args = (x, [1, 1], list(stride) or [1, 1])
            node.kwargs = {}
    program.graph_module.recompile()
    return program


def layout_copies_as_conversions(program: torch.export.ExportedProgram) -> torch.export.ExportedProgram:
    """Turn every ``clone`` node of ``program`` that sets a memory format into a ``_to_copy`` to that format, in
    place: the same copy, which ExecuTorch's XNNPACK partitioner takes (a layout-changing clone it does not)."""
    graph = program.graph_module.graph
    for node in graph.nodes:
        if (node.op == "call_function" and node.target is aten.clone.default
                and node.kwargs.get("memory_format") is not None):
            node.target = aten._to_copy.default
    program.graph_module.recompile()
    return program


DECOMPOSITIONS = {
    aten.layer_norm.default: _layer_norm,
    aten.scaled_dot_product_attention.default: _attention,
    aten.matmul.default: _matmul,
    aten.split_with_sizes.default: _split_with_sizes,
    aten.split.Tensor: _split,
    aten.chunk.default: _chunk,
    aten.select.int: _select,
    aten.repeat.default: _repeat,
    aten.sum.dim_IntList: _sum,
}


def is_cell_spread(module: nn.Module) -> bool:
    """Whether ``module`` is a depth-wise ``ConvTranspose2d`` whose kernel cells do not overlap (kernel = stride, no
    padding or dilation, one input and one output channel per group)."""
    return (type(module) is nn.ConvTranspose2d and module.groups == module.in_channels == module.out_channels
            and tuple(module.kernel_size) == tuple(module.stride) and tuple(module.padding) == (0, 0)
            and tuple(module.output_padding) == (0, 0) and tuple(module.dilation) == (1, 1)
            and module.padding_mode == "zeros")


class CellSpread(nn.ConvTranspose2d):
    """A depth-wise ``ConvTranspose2d`` with kernel = stride ``(rh, rw)`` (see :func:`is_cell_spread`) as one
    broadcast multiply and a bias add; same parameters.

    The cells do not overlap, so output pixel ``(i*rh + a, j*rw + b)`` of channel ``c`` is
    ``x[c, i, j] * w[c, a, b] + bias[c]``: the ``(B, C, h, 1, w, 1)`` input times the ``(1, C, 1, rh, 1, rw)``
    kernel, read as ``(B, C, h*rh, w*rw)``.

    ``forward(x)``: ``(B, C, h, w)`` -> ``(B, C, h * rh, w * rw)``.
    """

    def forward(self, x: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        if output_size is not None:
            return super().forward(x, output_size)
        (B, C, h, w), (rh, rw) = x.shape, self.stride
        y = (x.reshape(B, C, h, 1, w, 1) * self.weight.reshape(1, C, 1, rh, 1, rw)).reshape(B, C, h * rh, w * rw)
        return y if self.bias is None else y + self.bias.view(1, C, 1, 1)


@contextlib.contextmanager
def xnnpack_friendly(model: nn.Module) -> Iterator[nn.Module]:
    """Context for a capture of ``model`` for XNNPACK (LiteRT, ExecuTorch) with its transposed convolutions that
    :func:`is_cell_spread` accepts as :class:`CellSpread` (``model`` is changed in place: give it an export copy);
    yields ``model``."""
    for module in model.modules():
        if is_cell_spread(module):
            module.__class__ = CellSpread
    yield model


@contextlib.contextmanager
def executorch_friendly(model: nn.Module) -> Iterator[nn.Module]:
    """:func:`xnnpack_friendly` for an ExecuTorch capture, inside ``capturing_for("executorch")``: blocks with an
    ExecuTorch formulation take it (Mobile-Former's bridges, ``core/mobileformer/fused.py``); yields ``model``."""
    with xnnpack_friendly(model), capturing_for("executorch"):
        yield model
