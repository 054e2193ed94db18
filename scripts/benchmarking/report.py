"""Reporting a run: the Markdown table with ratios, the explanation of models below target, CSV and JSON."""
from __future__ import annotations

import argparse
import contextlib
import csv
import json
import platform
import sys
from dataclasses import asdict
from pathlib import Path

import torch

from .curve import curve_points, is_below_target, smallest_curve_gflops, target_for
from .engines import EDGE_ENGINES, ENGINES, Engine
from .results import CURVE, EDGE_METRICS, FLOOR_IMG, METRICS, NO_RATIO, REFERENCE, SCRIPTS, SMALL_CNN, Result


def ratio(value: float | None, reference: float | None) -> float | None:
    """value / reference, or None when either is missing or the reference is zero."""
    return value / reference if value is not None and reference else None


def cell(result: Result, key: str, fmt: str, reference: Result | None) -> str:
    """Table cell 'value (ratio x)', the error text if the metric failed, or '-' if it was skipped."""
    value = getattr(result, key)
    if value is None:
        error = result.errors.get(key)
        return f"error: {error[:80]}".replace("|", "/") if error else "-"
    r = None if key in NO_RATIO else ratio(value, getattr(reference, key) if reference else None)
    return fmt.format(value) + (f" ({r:.2f}x)" if r is not None else "")


def markdown_table(results: list[Result], args: argparse.Namespace) -> str:
    """The Markdown table (each figure with its ratio to YOLOv5s) plus settings and below-target sections."""
    reference = next((r for r in results if r.name == REFERENCE), None)
    headers = (["model"] + [h.format(img=args.img) for _, h, _ in METRICS]
               + [f"target >= {args.target:.2f} ({args.target_small:.2f} below {CURVE[0]})"])
    lines = ["| " + " | ".join(headers) + " |", "|---|" + "---:|" * len(METRICS) + ":---:|"]
    for res in results:
        flag = "below target" if is_below_target(res, reference, target_for(res, results, args)) else "ok"
        if not res.plugin or res.efficiency is None:
            flag = "baseline" if not res.plugin else "n/a"
        cells = [res.name] + [cell(res, k, f, reference) for k, _, f in METRICS] + [flag]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(settings_text(args))
    lines += explanation(results, reference, args)
    lines += edge_table(results, args)
    return "\n".join(lines) + "\n"


def edge_engines_on(args: argparse.Namespace) -> list[Engine]:
    """The edge engines this run measured (``--edge``, less ``--no-<engine>``)."""
    return [e for e in EDGE_ENGINES if getattr(args, e.flag, False)]


def edge_table(results: list[Result], args: argparse.Namespace) -> list[str]:
    """Markdown section of the edge engines (``--edge``): latency (ratio to YOLOv5s) and efficiency against the
    engine's own CNN curve per engine, the engines below target, and the fastest engine of every model."""
    engines = edge_engines_on(args)
    if not engines:
        return []
    reference = next((r for r in results if r.name == REFERENCE), None)
    metrics = [m for m in EDGE_METRICS if any(m[0] in (e.key, e.efficiency_key) for e in engines)]
    headers = ["model"] + [h for _, h, _ in metrics] + [f"edge target >= {args.target:.2f}", "fastest engine"]
    lines = ["", "### Edge engines", "", "| " + " | ".join(headers) + " |",
             "|---|" + "---:|" * len(metrics) + ":---:|---|"]
    judged = [e for e in engines if e.efficiency_key]  # INT8 columns have no curve of their own
    for res in results:
        if not res.plugin and not any(e.measures(res) for e in engines):
            continue
        below = [e.label for e in judged if res.plugin and is_below_target(
            res, reference, target_for(res, results, args, e.curve), e.efficiency_key)]
        measured = [e for e in judged if getattr(res, e.efficiency_key) is not None]
        flag = ("baseline" if not res.plugin else "below: " + ", ".join(below) if below
                else "ok" if measured else "n/a")
        cells = [res.name] + [cell(res, k, f, reference) for k, _, f in metrics] + [flag, res.fastest_engine or "-"]
        lines.append("| " + " | ".join(cells) + " |")
    curve = "/".join(engines[0].curve)
    int8 = (" LiteRT INT8 has no efficiency column: it is another accuracy (docs/int8.md), timed beside the float "
            "figures." if any(not e.float32 for e in engines) else "")
    lines += ["", f"Edge engines, float32, batch 1 at {args.img}x{args.img}, median of {args.runs} runs after "
              f"{args.warmup} warm-up, {args.threads} thread(s), each engine's models timed interleaved over "
              f"{max(1, args.rounds)} round(s) after all were converted: {'; '.join(e.described for e in engines)}. "
              f"Each model "
              f"is converted as the hosts' exports do (yolo_backbones.deploy). 'vs CNN' = GFLOP/s on the engine over "
              f"that of {curve} converted and run on the same engine in this run, interpolated in log GFLOPs at the "
              f"model's GFLOPs (target as for eager: {args.target:.2f}, {args.target_small:.2f} below the smallest of "
              f"them). 'fastest engine' = lowest latency of the float32 engines measured for the model. **These "
              f"kernels are the ones phones run (XNNPACK, ncnn), but on this x86 CPU they take their x86 code paths: "
              f"the figures are a proxy for a phone's, not a measurement of one.**{int8}"]
    return lines


def cpu_name() -> str:
    """Human-readable CPU model (from /proc/cpuinfo on Linux), else platform.processor()."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def settings_text(args: argparse.Namespace) -> str:
    """One paragraph describing how the numbers were taken."""
    engines = "; ".join(e.described if e.flag is None or getattr(args, e.flag, False) else f"{e.label} skipped"
                        for e in ENGINES if not e.edge)
    if not edge_engines_on(args):
        engines += "; edge engines (LiteRT, NCNN, ExecuTorch) not run (--edge)"
    train = (f"training: images/s of one SGD step (forward + ComputeLoss + backward + step), batch "
             f"{args.train_batch} at {args.train_img}, median of {args.train_steps} steps after 1 warm-up"
             if args.train else "training skipped")
    memory = (f" Training memory: one step (forward + ComputeLoss + backward), batch {args.train_memory_batch} at "
              f"{args.train_memory_img}, peak resident memory above the built model, a fresh process per figure; "
              f"'ckpt' with the backbone's activation checkpointing." if args.train_memory else "")
    return (f"Ratios in parentheses are to {REFERENCE} measured in the same run. Latency: {args.img}x{args.img}, "
            f"batch 1, FP32, fused eval model, median of {args.runs} runs after {args.warmup} warm-up, "
            f"{args.threads} thread(s), each engine's models timed interleaved over {max(1, args.rounds)} round(s); "
            f"{engines}. GFLOPs from torch.utils.flop_counter (CPU "
            f"fused attention included); GFLOP/s = GFLOPs / eager latency; 'vs CNN curve' = GFLOP/s over that "
            f"of {'/'.join(CURVE)} interpolated in log GFLOPs at the model's GFLOPs; {train}.{memory} "
            f"CPU: {cpu_name()}; torch {torch.__version__}.")


def describe_shares(shares: dict[str, float], limit: int = 4) -> str:
    """'a 45%, b 30%, ...' for the largest ``limit`` shares."""
    items = sorted(shares.items(), key=lambda kv: -kv[1])[:limit]
    return ", ".join(f"{k} {v:.0%}" for k, v in items if v >= 0.005)


def explain_model(res: Result, reference: Result | None, img: int) -> str:
    """One Markdown bullet on why a model's GFLOP/s is low: its FLOP mix and where its eager time goes."""
    text = (f"- **{res.name}**: {res.gflops_per_s:.1f} GFLOP/s = {res.efficiency:.2f}x the YOLOv5 CNN curve at "
            f"{res.gflops:.1f} GFLOPs.")
    flops, ref_b = res.breakdown.get("flop_share"), reference.breakdown if reference else {}
    if flops:
        text += f" FLOPs: {describe_shares(flops)}."
    if res.breakdown.get("time_share"):
        text += f" Eager time: {describe_shares(res.breakdown['time_share'])}"
        if ref_b.get("time_share"):
            text += f" ({REFERENCE}: {describe_shares(ref_b['time_share'], 3)})"
        text += "."
    if res.breakdown.get("top_ops"):
        text += " Top ops: " + ", ".join(f"{k} {v:.0%}" for k, v in res.breakdown["top_ops"][:3]) + "."
    return text + " " + likely_cause(res) + floor_text(res, img)


def small_cnn_text(res: Result, results: list[Result]) -> str:
    """For a model smaller than every curve CNN: its GFLOP/s against the :data:`SMALL_CNN` measured in this run."""
    small = next((r for r in results if r.name == SMALL_CNN[0] and r.gflops_per_s), None)
    smallest = smallest_curve_gflops(results)
    if small is None or smallest is None or not res.gflops or res.gflops >= smallest or not res.gflops_per_s:
        return ""
    share = floor_share(small)
    floor = f", {share:.0%} of its latency at the {FLOOR_IMG}x{FLOOR_IMG} floor" if share is not None else ""
    return (f" Against a YOLOv5 CNN of its own size ({small.name}: {SMALL_CNN[1]} at width {SMALL_CNN[2]}, "
            f"{small.gflops:.1f} GFLOPs, {small.gflops_per_s:.1f} GFLOP/s = {small.efficiency:.2f}x the curve{floor}) "
            f"it reaches {res.gflops_per_s / small.gflops_per_s:.2f}x.")


def floor_share(res: Result) -> float | None:
    """The model's per-operator floor (eager latency at :data:`FLOOR_IMG`) as a share of its eager latency."""
    floor = res.breakdown.get("floor_ms")
    return floor / res.eager_ms if floor is not None and res.eager_ms else None


def floor_text(res: Result, img: int) -> str:
    """The model's per-operator floor against its latency at ``img`` and the efficiency it caps, or ''.

    Subtracting the floor from the full-size latency leaves the time of arithmetic and memory traffic; the
    efficiency over that time bounds what any cut of per-operator cost (Python, dispatch, kernel set-up) can give.
    """
    share = floor_share(res)
    if share is None or res.efficiency is None or share >= 1.0:
        return ""
    return (f" Per-operator floor: at {FLOOR_IMG}x{FLOOR_IMG} input ({(FLOOR_IMG / img) ** 2:.0%} of the FLOPs) it "
            f"still takes {res.breakdown['floor_ms']:.1f} ms, {share:.0%} of its {res.eager_ms:.1f} ms; with that "
            f"cost at zero it would reach at most {res.efficiency / (1.0 - share):.2f}x the curve.")


def likely_cause(res: Result) -> str:
    """A short reading of the breakdown: which kind of op makes the model slow per FLOP."""
    flops, time_share = res.breakdown.get("flop_share", {}), res.breakdown.get("time_share", {})
    zero_flop = sum(time_share.get(k, 0.0) for k in ("layout/copy", "normalization", "elementwise/activation",
                                                       "pooling/resize", "other"))
    causes = []
    slow = sum(v for k, v in res.breakdown.get("top_ops", []) if "slow_conv" in k)
    if slow >= 0.2:
        causes.append(f"{slow:.0%} of the time is in aten::_slow_conv2d_forward, PyTorch's im2col fallback that it "
                      "picks over oneDNN for batch-1 1x1 and small-feature-map convolutions (more so with 1 thread)")
    if zero_flop >= 0.3:
        causes.append(f"{zero_flop:.0%} of the time is in ops with (almost) no counted FLOPs "
                      "(reshapes/permutes/copies, norms, element-wise): token mixing is memory-bound")
    if flops.get("depthwise/grouped conv", 0.0) >= 0.05:
        causes.append("depthwise/grouped convolutions do few FLOPs per byte moved")
    if time_share.get("matmul/attention", 0.0) > 1.5 * flops.get("matmul/attention", 1.0):
        causes.append("small attention matmuls (few tokens or channels per head) run far below GEMM peak")
    if not causes:
        causes.append("small layers (low width at batch 1) keep the CPU's GEMM kernels from reaching peak")
    return "Likely cause: " + "; ".join(causes) + "."


def explanation(results: list[Result], reference: Result | None, args: argparse.Namespace) -> list[str]:
    """Markdown section listing the plugin models below their efficiency target, with a reason each."""
    low = [r for r in results if r.plugin and is_below_target(r, reference, target_for(r, results, args))]
    lines = ["", f"### Below target (efficiency < {args.target:.2f}, < {args.target_small:.2f} below {CURVE[0]})", ""]
    if not curve_points(results):
        return lines + [f"Not evaluated: none of {'/'.join(CURVE)} has a GFLOP/s in this run."]
    if not low:
        return lines + ["None: every plugin model reaches the target."]
    return lines + [explain_model(r, reference, args.img) + small_cnn_text(r, results) for r in low]


def write_raw(results: list[Result], args: argparse.Namespace, out: Path) -> None:
    """benchmark.json (settings, raw numbers, errors, breakdowns) and benchmark.csv (one row per model)."""
    reference = next((r for r in results if r.name == REFERENCE), None)
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    rows = []
    for r in results:
        row = asdict(r)
        row["below_target"] = is_below_target(r, reference, target_for(r, results, args))
        for key, *_ in METRICS + EDGE_METRICS:
            row[f"{key}_vs_{REFERENCE}"] = (None if key in NO_RATIO else
                                            ratio(getattr(r, key), getattr(reference, key) if reference else None))
        rows.append(row)
    meta = {"cpu": cpu_name(), "torch": torch.__version__, "settings": settings}
    (out / "benchmark.json").write_text(json.dumps({**meta, "results": rows}, indent=2, default=str))
    keys = [k for k, *_ in METRICS + EDGE_METRICS]
    columns = ["name", "plugin"] + keys + [f"{k}_vs_{REFERENCE}" for k in keys] + ["fastest_engine"]
    with open(out / "benchmark.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns + ["below_target", "errors"])
        for row in rows:
            errors = "; ".join(f"{k}: {v}" for k, v in row["errors"].items())
            writer.writerow([row[c] if row[c] is not None else "" for c in columns] + [row["below_target"], errors])


def checkpoint_load_text(repeats: int) -> str:
    """A Markdown paragraph: the safe loader's load time against ``torch.load(weights_only=True)``."""
    if str(SCRIPTS) not in sys.path:
        sys.path.insert(0, str(SCRIPTS))
    from bench_checkpoint_load import measure

    safe_s, plain_s, size = measure(repeats)
    return (f"\nCheckpoint loading ({size / 1e6:.0f} MB, {repeats} interleaved loads each, median): safe loader "
            f"{safe_s * 1000:.0f} ms, torch.load(weights_only=True) {plain_s * 1000:.0f} ms, "
            f"ratio {safe_s / plain_s:.2f}.\n")
