"""Measuring one eager model: FLOPs (with the FLOP mix), latency, training throughput, where the time goes."""
from __future__ import annotations

import statistics
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from .models import build_model
from .results import HYP

# Op-name fragments -> category, for the explanation of models below target (first match wins).
OP_CATEGORIES = (
    ("conv", ("conv", "mkldnn_convolution")),
    ("matmul/attention", ("mm", "matmul", "linear", "addmm", "bmm", "baddbmm", "attention", "softmax", "einsum")),
    ("normalization", ("norm",)),
    ("pooling/resize", ("pool", "interpolate", "upsample")),
    ("layout/copy", ("copy", "contiguous", "permute", "transpose", "reshape", "view", "cat", "clone", "flatten",
                     "unfold", "roll", "pad", "split", "chunk", "slice", "select", "index", "stack", "expand",
                     "to_copy", "empty")),
    ("elementwise/activation", ("add", "mul", "div", "sub", "sigmoid", "silu", "gelu", "relu", "hardswish",
                                "hardsigmoid", "exp", "pow", "clamp", "tanh", "mean", "sum", "where")),
)


def median_time_s(fn: Callable[[], Any], warmup: int, runs: int) -> float:
    """Median wall time in seconds of ``runs`` calls of ``fn`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(max(1, runs)):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def attention_flop_mapping() -> dict[Any, Callable]:
    """FLOP formulas for the CPU fused-attention operator, which ``torch.utils.flop_counter`` does not count.

    On CPU ``scaled_dot_product_attention`` runs ``aten._scaled_dot_product_flash_attention_for_cpu``; the
    counter only knows the CUDA kernels, so without this mapping the attention of EdgeViT and of
    Mobile-Former's bridges would count as zero FLOPs.
    """
    from torch.utils.flop_counter import sdpa_flop_count

    op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if op is None:
        return {}

    def flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
        return sdpa_flop_count(query_shape, key_shape, value_shape)

    return {op: flops}


def count_gflops(model: torch.nn.Module, img: int) -> tuple[float, dict[str, float]]:
    """FLOPs (multiply and add counted separately) of one forward at ``img x img`` in G, and GFLOPs per op."""
    counter = FlopCounterMode(display=False, custom_mapping=attention_flop_mapping())
    with counter, torch.no_grad():
        model(torch.zeros(1, 3, img, img))
    per_op = {str(op).split(".")[1] if "." in str(op) else str(op): n / 1e9
              for op, n in counter.get_flop_counts().get("Global", {}).items()}
    return counter.get_total_flops() / 1e9, per_op


def depthwise_gflops(model: torch.nn.Module, img: int) -> float:
    """GFLOPs of the grouped/depthwise convolutions (groups > 1): memory-bound, few FLOPs per byte on a CPU."""
    total = 0.0

    def hook(module, _inputs, output):
        nonlocal total
        k = module.kernel_size[0] * module.kernel_size[1]
        total += 2 * output.numel() * module.in_channels // module.groups * k

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, torch.nn.Conv2d) and m.groups > 1]
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, img, img))
    finally:
        for h in handles:
            h.remove()
    return total / 1e9


def eager_latency_ms(model: torch.nn.Module, img: int, warmup: int, runs: int) -> float:
    """Median milliseconds of a batch-1 FP32 forward of an eval model at ``img x img``."""
    x = torch.rand(1, 3, img, img)
    with torch.no_grad():
        return median_time_s(lambda: model(x), warmup, runs) * 1000


def interleaved_ms(calls: dict[str, Callable[[], Any]], warmup: int, runs: int, rounds: int) -> dict[str, float]:
    """Median milliseconds of each call, timed in ``rounds`` rounds that visit every call in turn (``runs`` timed
    calls each in all, after ``warmup`` untimed ones).

    The machine's speed drifts (shared CPUs, turbo, other jobs); interleaving spreads the drift over all
    models instead of charging it to whichever ran during a slow phase. ``rounds`` <= 1 times one model at a time.
    """
    samples: dict[str, list[float]] = {name: [] for name in calls}
    per_round = max(1, runs // max(1, rounds))
    for call in calls.values():
        for _ in range(warmup):
            call()
    for _ in range(max(1, rounds)):
        for name, call in calls.items():
            for _ in range(per_round):
                t0 = time.perf_counter()
                call()
                samples[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) * 1000 for name, t in samples.items()}


def interleaved_eager_ms(models: dict[str, torch.nn.Module], img: int, warmup: int, runs: int,
                         rounds: int) -> dict[str, float]:
    """:func:`interleaved_ms` of batch-1 eager forwards of every model on one random ``img`` x ``img`` image."""
    x = torch.rand(1, 3, img, img)
    with torch.no_grad():
        return interleaved_ms({name: (lambda m=model: m(x)) for name, model in models.items()}, warmup, runs, rounds)


def train_images_per_s(cfg_path: Path, batch: int, img: int, steps: int) -> float:
    """Images/s of one training step (forward, ComputeLoss, backward, SGD step); median of ``steps`` after 1 warm-up."""
    from yolov5.utils.loss import ComputeLoss

    model = build_model(cfg_path).train()
    model.hyp = HYP
    loss_fn = ComputeLoss(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.937, nesterov=True)
    images = torch.rand(batch, 3, img, img)
    boxes = [[0, 0.5, 0.5, 0.4, 0.3], [3, 0.3, 0.6, 0.2, 0.5], [7, 0.7, 0.3, 0.3, 0.2]]
    targets = torch.tensor([[i, *b] for i in range(batch) for b in boxes], dtype=torch.float32)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss, _ = loss_fn(model(images), targets)
        loss.backward()
        optimizer.step()

    return batch / median_time_s(step, 1, steps)


def op_category(name: str) -> str:
    """Category (conv, matmul/attention, ...) of an aten op name; 'other' if none matches."""
    name = name.lower().removeprefix("aten::")
    for category, fragments in OP_CATEGORIES:
        if any(f in name for f in fragments):
            return category
    return "other"


def time_breakdown(model: torch.nn.Module, img: int, runs: int = 2) -> dict[str, Any]:
    """Share of eager CPU self-time per op category and the top ops, from torch.profiler over ``runs`` forwards."""
    from torch.profiler import ProfilerActivity, profile

    x = torch.rand(1, 3, img, img)
    with torch.no_grad():
        model(x)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(runs):
                model(x)
    events = [(e.key, e.self_cpu_time_total) for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(t for _, t in events) or 1.0
    shares: dict[str, float] = defaultdict(float)
    for key, t in events:
        shares[op_category(key)] += t / total
    top = sorted(events, key=lambda e: -e[1])[:5]
    return {"time_share": dict(sorted(shares.items(), key=lambda kv: -kv[1])),
            "top_ops": [(k, round(t / total, 3)) for k, t in top]}


def flop_breakdown(per_op: dict[str, float], dw_gflops: float, total: float) -> dict[str, float]:
    """Share of the FLOPs in dense convs, depthwise/grouped convs and matmul/attention ops."""
    total = total or 1.0
    conv = sum(v for k, v in per_op.items() if op_category(k) == "conv")
    return {"dense conv": max(conv - dw_gflops, 0.0) / total, "depthwise/grouped conv": dw_gflops / total,
            "matmul/attention": sum(v for k, v in per_op.items() if op_category(k) == "matmul/attention") / total}
