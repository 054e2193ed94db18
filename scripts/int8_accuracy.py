#!/usr/bin/env python
"""What INT8 costs each model: cosine / SQNR of the head outputs and detection agreement vs FP32.

For each model YAML: fit a reference detector on the calibration images (scripts/fit_probe_model.py; reused from
``--probe-dir`` when present), export it to an FP32 OpenVINO IR through its host's own export, quantize that IR with
:func:`yolo_backbones.deploy.int8.openvino.quantize_openvino` (what ``--int8`` / ``quantize=8`` run) and compare
both on the evaluation images. ``--engine litert`` does the same with the host's float LiteRT export and
:func:`yolo_backbones.deploy.int8.litert.quantize_litert` (what ``--include tflite --int8`` / ``format=litert
quantize=8`` run), both files run by the LiteRT interpreter. ``--sensitivity`` also measures, per quantized layer,
how much the score SQNR improves when that layer alone is returned to floating point (docs/int8.md). Writes one
``rows/<model>.json`` per model as soon as it is measured (a rerun skips the models already there: ``--redo``
measures them again), then ``int8_accuracy.json`` and a markdown table to ``--out``.

Example:
    python scripts/int8_accuracy.py --models yolo11_edgevit yolov5_mobileformer --out runs/int8
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

import yolo_backbones  # noqa: F401  (installs the plugin into the hosts)
from yolo_backbones.deploy.int8.accuracy import compare_outputs, guess_layout
from yolo_backbones.deploy.int8.calibration import dataset_images, load_images
from yolo_backbones.deploy.int8.openvino import quantize_openvino
from yolo_backbones.deploy.int8.scopes import KEEP_FP32, KeepRule
from yolo_backbones.deploy.int8.sensitivity import layer_sensitivity
from yolo_backbones.deploy.openvino import compile_openvino, import_openvino
from yolo_backbones.resources import MODELS_DIR

ROOT = Path(__file__).resolve().parents[1]


def _fit_module() -> Any:
    spec = importlib.util.spec_from_file_location("fit_probe_model", ROOT / "scripts" / "fit_probe_model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def probe_checkpoint(cfg: str, args: argparse.Namespace) -> Path:
    """The fitted reference checkpoint of ``cfg`` (fitted now unless ``--probe-dir`` already holds it)."""
    path = args.probe_dir / f"{Path(cfg).stem}.pt"
    if not path.is_file():
        fit = _fit_module()
        t0 = time.perf_counter()
        model, host = fit.fit(cfg, args.data, args.imgsz, args.steps, args.batch, args.lr, seed=args.seed,
                              images=args.fit_images, log_every=0)
        fit.save(model, host, path)
        print(f"{cfg}: fitted in {time.perf_counter() - t0:.0f}s -> {path}", flush=True)
    return path


def export_fp32(checkpoint: Path, host: str, imgsz: int) -> Path:
    """The FP32 OpenVINO IR (.xml) of ``checkpoint`` written by its host's own export."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        if host == "yolov5":
            from yolov5 import export

            export.run(weights=str(checkpoint), imgsz=[imgsz], include=["openvino"], device="cpu")
            folder = checkpoint.with_name(f"{checkpoint.stem}_openvino_model")
        else:
            from ultralytics import YOLO

            folder = Path(YOLO(str(checkpoint)).export(format="openvino", imgsz=imgsz))
    return next(folder.glob("*.xml"))


def run_model(compiled: Any, images: list[np.ndarray]) -> list[np.ndarray]:
    """Head output (first output) of a compiled OpenVINO model for each (1, 3, H, W) image."""
    return [np.array(compiled(image)[compiled.outputs[0]]) for image in images]


def export_litert_fp32(checkpoint: Path, host: str, imgsz: int) -> tuple[Path, bool]:
    """``(float .tflite, takes NHWC)`` of ``checkpoint`` written by its host's own LiteRT export."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        if host == "yolov5":
            from yolov5 import export

            export.run(weights=str(checkpoint), imgsz=[imgsz], include=["tflite"], device="cpu")
            return checkpoint.with_name(f"{checkpoint.stem}-fp32.tflite"), True
        from ultralytics import YOLO

        return Path(YOLO(str(checkpoint)).export(format="litert", imgsz=imgsz)), False


def measure_litert(cfg: str, checkpoint: Path, host: str, args: argparse.Namespace) -> dict[str, Any]:
    """The figures of one model's LiteRT INT8 file against its float one (both hosts divide the box coordinates
    of their LiteRT files by the image size: they are scaled back to pixels here)."""
    from yolo_backbones.deploy.int8.litert import quantize_litert
    from yolo_backbones.deploy.litert import load_litert

    fp32, nhwc = export_litert_fp32(checkpoint, host, args.imgsz)

    def images(data: str, limit: int | None) -> list[np.ndarray]:
        batches = [lb.image[None] for lb in load_images(dataset_images(data, "val", limit), args.imgsz)]
        return [np.ascontiguousarray(x.transpose(0, 2, 3, 1)) if nhwc else x for x in batches]

    evaluation = images(args.eval_data or args.data, args.eval_images)
    t0 = time.perf_counter()
    int8 = quantize_litert(fp32, fp32.with_name(f"{checkpoint.stem}_int8.tflite"),
                           images(args.data, args.calibration_images),
                           float_ops=args.litert_float_ops)
    row: dict[str, Any] = {"model": Path(cfg).stem, "host": host, "engine": "litert",
                           "float_ops": args.litert_float_ops, "quantize_s": time.perf_counter() - t0}

    def run(file: Path) -> list[np.ndarray]:
        runner = load_litert(file, args.threads)
        return [runner(x)[0] for x in evaluation]

    reference, test = run(fp32), run(int8)
    layout = guess_layout(reference[0].shape, args.nc)
    coords = (slice(None), slice(0, 4)) if layout == "ultralytics" else (Ellipsis, slice(0, 4))
    for output in (*reference, *test):
        output[coords] *= args.imgsz
    row["layout"] = layout
    row.update(compare_outputs(reference, test, layout))
    return row


def measure(cfg: str, args: argparse.Namespace) -> dict[str, Any]:
    """All figures of one model YAML (see the module docstring)."""
    import yolov5  # noqa: F401

    host = _fit_module().resolve_cfg(cfg)[1]
    checkpoint = probe_checkpoint(cfg, args)
    if args.engine == "litert":
        return measure_litert(cfg, checkpoint, host, args)
    ov = import_openvino()
    xml = export_fp32(checkpoint, host, args.imgsz)
    fp32 = ov.Core().read_model(str(xml))
    calibration = [lb.image[None] for lb in load_images(
        dataset_images(args.data, "val", args.calibration_images), args.imgsz)]
    evaluation = [lb.image[None] for lb in load_images(
        dataset_images(args.eval_data or args.data, "val", args.eval_images), args.imgsz)]
    reference = run_model(compile_openvino(fp32, threads=args.threads), evaluation)
    layout = guess_layout(reference[0].shape, args.nc)
    row: dict[str, Any] = {"model": Path(cfg).stem, "host": host, "layout": layout, "keep": args.keep}
    t0 = time.perf_counter()
    rules = () if args.no_keep else KEEP_FP32
    if args.keep:
        rules = (*rules, *(KeepRule(pattern[5:], "--keep", "head") if pattern.startswith("head:")
                           else KeepRule(pattern, "--keep") for pattern in args.keep))
    quantized = quantize_openvino(fp32, calibration, keep_fp32=rules)
    row["quantize_s"] = time.perf_counter() - t0
    row.update(compare_outputs(reference, run_model(compile_openvino(quantized, threads=args.threads), evaluation),
                               layout))
    if args.sensitivity:
        plain = quantize_openvino(fp32, calibration, keep_fp32=())
        row["sensitivity"] = layer_sensitivity(plain, reference, evaluation, layout, threads=args.threads,
                                               top=args.sensitivity)
    return row


def table(rows: list[dict[str, Any]]) -> str:
    """Markdown table of the rows: whole-output and score-channel cosine / SQNR, box SQNR, agreement, FP32 boxes."""
    header = ("| model | whole-output cosine | whole-output SQNR (dB) | score cosine | score SQNR (dB) | "
              "box SQNR (dB) | agreement mAP50 | FP32 boxes |")
    lines = [header, "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | error: {r['error']} |||||||")
            continue
        lines.append(f"| {r['model']} | {r['cosine_all']:.5f} | {r['sqnr_all_db']:.1f} | {r['cosine_scores']:.4f} | "
                     f"{r['sqnr_scores_db']:.1f} | {r['sqnr_boxes_db']:.1f} | {r['agreement_map50']:.3f} | "
                     f"{int(r['reference_boxes'])} |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command line of the script (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", help="YAML names in models/ (default: every one)")
    parser.add_argument("--engine", choices=("openvino", "litert"), default="openvino",
                        help="INT8 route measured: OpenVINO (NNCF) or LiteRT (ai-edge-quantizer)")
    parser.add_argument("--data", default="coco8.yaml", help="dataset YAML: fitting and calibration images")
    parser.add_argument("--calibration-images", type=int, default=None, help="first N images only")
    parser.add_argument("--eval-data", default=None, help="dataset YAML of the evaluation images (default: --data)")
    parser.add_argument("--eval-images", type=int, default=None, help="first N evaluation images only")
    parser.add_argument("--nc", type=int, default=80, help="classes of the dataset")
    parser.add_argument("--imgsz", type=int, default=160)
    parser.add_argument("--steps", type=int, default=300, help="fitting steps of the reference detector")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=2e-3, help="peak learning rate of the fit")
    parser.add_argument("--fit-images", type=int, default=None, help="fit on the first N images of --data only")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch (fitting) and OpenVINO threads")
    parser.add_argument("--litert-float-ops", nargs="*", default=[], metavar="OP",
                        help="with --engine litert: TFLite operators also left in float (experiments)")
    parser.add_argument("--no-keep", action="store_true", help="quantize every layer (no KEEP_FP32 rules)")
    parser.add_argument("--keep", nargs="*", default=[], metavar="REGEX",
                        help="also keep layers whose module path matches in floating point (experiments); "
                             "head:REGEX matches the path below the Detect head")
    parser.add_argument("--sensitivity", type=int, default=0, metavar="TOP",
                        help="also measure per-layer sensitivity and keep the TOP layers")
    parser.add_argument("--probe-dir", type=Path, default=Path("runs/int8/probe"))
    parser.add_argument("--out", type=Path, default=Path("runs/int8"))
    parser.add_argument("--redo", action="store_true", help="measure again the models already in --out/rows/")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Measure every model asked for; write the JSON and the table."""
    args = parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    args.probe_dir.mkdir(parents=True, exist_ok=True)
    names = args.models or sorted(p.stem for p in MODELS_DIR.glob("*.yaml"))
    done = args.out / "rows"
    done.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in names:
        cfg = name if name.endswith(".yaml") else f"{name}.yaml"
        saved = done / f"{Path(cfg).stem}.json"
        if saved.is_file() and not args.redo:  # measured by an earlier run: a long run resumes where it stopped
            rows.append(json.loads(saved.read_text()))
            continue
        try:
            rows.append(measure(cfg, args))
        except Exception as exc:  # noqa: BLE001  (one model's failure is reported, the others still run)
            rows.append({"model": Path(cfg).stem, "error": f"{type(exc).__name__}: {exc}"})
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "sensitivity"}), flush=True)
        if "error" not in rows[-1]:  # failures are retried by the next run
            saved.write_text(json.dumps(rows[-1], indent=1))
        (args.out / "int8_accuracy.json").write_text(json.dumps(rows, indent=1))
    (args.out / "int8_accuracy.md").write_text(table(rows) + "\n")
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
