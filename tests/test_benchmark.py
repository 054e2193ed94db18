"""scripts/benchmark.py at tiny settings: one small plugin YAML plus the YOLOv5n/s baselines, all outputs written.

Runs the script's ``main()`` in-process (the numbers themselves are meaningless at these sizes; the final
figures are taken on a quiet machine at the defaults).
"""
from __future__ import annotations

import csv
import importlib.util
import json
import math
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODEL = "yolov5_mobileformer_52m"
MODELS = ["yolov5n-half", "yolov5n", "yolov5s", "yolov5m", MODEL]
METRICS = ["params_m", "gflops", "eager_ms", "onnx_ms", "openvino_ms", "openvino_int8_ms", "int8_speedup", "train_ips",
           "gflops_per_s", "efficiency"]
HEADERS = ["model", "params (M)", "GFLOPs @128", "eager ms", "ONNX ms", "OpenVINO ms", "OpenVINO INT8 ms",
           "INT8 speed-up (OpenVINO)", "train img/s", "GFLOP/s",
           "vs CNN curve", "vs reference (eval / fused / own layers)", "train mem GB", "ckpt mem GB",
           "target >= 0.70 (0.50 below yolov5n)"]


def load_script():
    """Import scripts/benchmark.py as a module (scripts/ is not a package)."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("matplotlib")
    if importlib.util.find_spec("openvino") is None:  # not imported here: the plugin imports it telemetry-free
        pytest.skip("openvino is not installed")
    spec = importlib.util.spec_from_file_location("benchmark_script", ROOT / "scripts" / "benchmark.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def out(tmp_path_factory) -> Path:
    """Run the benchmark once at tiny settings into a temporary directory."""
    out = tmp_path_factory.mktemp("benchmark")
    argv = ["--models", f"{MODEL}.yaml", "--img", "128", "--runs", "2", "--warmup", "1", "--train-img", "128",
            "--train-batch", "2", "--train-steps", "1", "--threads", "1", "--out", str(out)]
    assert load_script().main(argv) == 0
    return out


def table_rows(markdown: str) -> list[list[str]]:
    """Cells of every Markdown table line (header included, separator excluded)."""
    rows = [[c.strip() for c in line.strip().strip("|").split("|")]
            for line in markdown.splitlines() if line.startswith("|")]
    return [r for r in rows if not all(re.fullmatch(r":?-+:?", c) for c in r)]


@pytest.mark.slow
def test_markdown_has_columns_and_a_row_per_model(out) -> None:
    rows = table_rows((out / "benchmark.md").read_text())
    assert rows[0] == HEADERS
    assert [r[0] for r in rows[1:]] == MODELS
    assert all(len(r) == len(HEADERS) for r in rows)
    assert not any("error" in c for r in rows for c in r), rows


@pytest.mark.slow
def test_ratios_to_yolov5s(out) -> None:
    rows = {r[0]: r for r in table_rows((out / "benchmark.md").read_text())[1:]}
    with_ratio = [*range(1, 7), 8, 9]  # every measured figure but the INT8 speed-up (a ratio itself, column 7)
    for k in with_ratio:
        assert rows["yolov5s"][k].endswith("(1.00x)"), rows["yolov5s"][k]
        assert re.fullmatch(r"[0-9.]+ \([0-9.]+x\)", rows[MODEL][k]), rows[MODEL][k]
    assert all(re.fullmatch(r"[0-9.]+x", rows[name][7]) for name in rows)
    assert rows[MODEL][-1] in {"ok", "below target"}
    assert rows["yolov5s"][-1] == "baseline"
    assert all(rows[name][10] == "1.00" for name in ("yolov5n", "yolov5s", "yolov5m"))  # on their own curve
    assert re.fullmatch(r"[0-9.]+", rows[MODEL][10])
    assert rows[MODEL][11:14] == ["-", "-", "-"]  # --reference / --train-memory not asked for
    assert "### Below target" in (out / "benchmark.md").read_text()


@pytest.mark.slow
def test_raw_numbers_are_positive(out) -> None:
    data = json.loads((out / "benchmark.json").read_text())
    results = {r["name"]: r for r in data["results"]}
    assert list(results) == MODELS
    for r in results.values():
        assert r["errors"] == {}
        assert all(r[k] > 0 for k in METRICS), r
        assert r["gflops_per_s"] == pytest.approx(r["gflops"] / (r["eager_ms"] / 1000))
    assert all(v == pytest.approx(1.0) for k, v in results["yolov5s"].items()
               if k.endswith("_vs_yolov5s") and v is not None)
    with open(out / "benchmark.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["name"] for r in rows] == MODELS
    assert all(float(r[k]) > 0 for r in rows for k in METRICS)


def test_curve_interpolates_in_log_gflops() -> None:
    script = load_script()
    points = [(math.log(1.0), 10.0), (math.log(4.0), 30.0)]
    assert script.curve_gflops_per_s(points, 2.0) == pytest.approx(20.0)
    assert script.curve_gflops_per_s(points, 0.5) == 10.0 and script.curve_gflops_per_s(points, 9.0) == 30.0


@pytest.mark.slow
def test_small_cnn_is_yolov5n_at_half_width(out) -> None:
    import yaml

    cfg = yaml.safe_load((out / "yolov5n-half.yaml").read_text())
    assert cfg["width_multiple"] == 0.125 and cfg["depth_multiple"] == 0.33
    rows = {r[0]: r for r in table_rows((out / "benchmark.md").read_text())[1:]}
    assert rows["yolov5n-half"][-1] == "baseline"


def test_models_below_yolov5n_are_compared_with_the_small_cnn() -> None:
    script = load_script()
    R = script.Result
    results = [R("yolov5n-half", False, gflops=1.3, gflops_per_s=50.0, efficiency=0.5),
               R("yolov5n", False, gflops=4.5, gflops_per_s=100.0, efficiency=1.0),
               R("tiny", True, gflops=1.2, gflops_per_s=40.0, efficiency=0.4),
               R("big", True, gflops=6.0, gflops_per_s=60.0, efficiency=0.6)]
    assert "it reaches 0.80x" in script.small_cnn_text(results[2], results)
    assert script.small_cnn_text(results[3], results) == ""  # within the curve: no extra comparison
    assert script.small_cnn_text(results[2], results[1:]) == ""  # small CNN not measured


@pytest.mark.slow
def test_floor_is_measured_and_caps_the_efficiency(out) -> None:
    data = json.loads((out / "benchmark.json").read_text())
    for r in data["results"]:
        assert 0 < r["breakdown"]["floor_ms"], r["name"]
    script = load_script()
    res = script.Result("m", True, eager_ms=40.0, efficiency=0.35, breakdown={"floor_ms": 10.0})
    assert script.floor_share(res) == pytest.approx(0.25)
    text = script.floor_text(res, 640)
    assert "takes 10.0 ms, 25% of its 40.0 ms" in text and "at most 0.47x" in text  # 0.35 * 40 / 30
    assert "(1% of the FLOPs)" in text
    res.breakdown["floor_ms"] = 50.0  # noise: a floor above the full-size time says nothing
    assert script.floor_text(res, 640) == ""
    assert script.floor_text(script.Result("m", True, eager_ms=40.0, efficiency=0.35), 640) == ""


def test_cpu_attention_flops_are_counted() -> None:
    script = load_script()
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    q = torch.randn(1, 2, 16, 8)
    counter = FlopCounterMode(display=False, custom_mapping=script.attention_flop_mapping())
    with counter, torch.no_grad():
        torch.nn.functional.scaled_dot_product_attention(q, q, q)
    assert counter.get_total_flops() == 2 * (2 * 2 * 16 * 16 * 8)  # q @ k^T and attn @ v


@pytest.mark.slow
@pytest.mark.eval_fusion  # the "eval" timing is the default eval model
def test_reference_and_memory_columns(tmp_path, monkeypatch) -> None:
    """--reference times the EfficientFormer classifiers against timm; --train-memory runs child processes."""
    pytest.importorskip("timm")
    script = load_script()
    monkeypatch.setattr(sys.modules["benchmarking.train_memory"], "train_peak_memory_gb", lambda cfg, batch, img, ckpt, threads: 1.5 if ckpt else 2.5)
    argv = ["--models", "yolov5_efficientformerv2_s0.yaml", "--img", "64", "--runs", "1", "--warmup", "0",
            "--no-train", "--no-onnx", "--no-openvino", "--no-int8", "--no-explain", "--threads", "1", "--reference",
            "--train-memory", "--out", str(tmp_path)]
    assert script.main(argv) == 0
    rows = {r[0]: r for r in table_rows((tmp_path / "benchmark.md").read_text())[1:]}
    assert re.fullmatch(r"[0-9.]+x / [0-9.]+x / [0-9.]+x", rows["yolov5_efficientformerv2_s0"][11])
    assert rows["yolov5_efficientformerv2_s0"][12:14] == ["2.50 (1.00x)", "1.50"]
    assert rows["yolov5s"][12:14] == ["2.50 (1.00x)", "-"]  # checkpointing is a backbone option


@pytest.mark.slow
def test_png_is_written(out) -> None:
    data = (out / "benchmark.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert width > 2.5 * height  # one latency-vs-GFLOPs panel per engine: eager, onnxruntime, OpenVINO


@pytest.mark.slow
def test_failure_is_recorded_not_raised(tmp_path, monkeypatch) -> None:
    """A metric that raises (here ONNX export, so ONNX and OpenVINO) lands as an error in its cell; the run and the
    other metrics go on."""
    script = load_script()

    def broken(*_args, **_kwargs):
        raise RuntimeError("export exploded")

    monkeypatch.setattr(sys.modules["benchmarking.engines"], "export_onnx", broken)
    argv = ["--models", f"{MODEL}.yaml", "--img", "64", "--runs", "1", "--warmup", "0", "--no-train",
            "--no-explain", "--threads", "1", "--out", str(tmp_path)]
    assert script.main(argv) == 0
    rows = {r[0]: r for r in table_rows((tmp_path / "benchmark.md").read_text())[1:]}
    assert rows[MODEL][4] == "error: RuntimeError: export exploded"
    assert rows[MODEL][5] == "error: RuntimeError: export exploded"  # OpenVINO converts the ONNX export
    assert rows[MODEL][6] == "-"  # --no-train
    assert rows[MODEL][3].endswith("x)")


@pytest.mark.slow
def test_checkpoint_load_measurement_returns_both_timings() -> None:
    sys.path.insert(0, str(ROOT / "scripts"))
    from bench_checkpoint_load import measure

    safe_s, plain_s, size = measure(repeats=1, target_mb=2.0)
    assert safe_s > 0 and plain_s > 0 and size > 1e6


def test_official_reference_needs_a_checkout() -> None:
    """EdgeViT / Mobile-Former have no pip reference: without a checkout the benchmark says which option to pass."""
    sys.path.insert(0, str(ROOT / "scripts"))
    from reference_models import ReferenceUnavailable, reference_pair

    for family in ("edgevit", "mobileformer"):
        with pytest.raises(ReferenceUnavailable, match=f"--official-{family} DIR"):
            reference_pair(family, "xxs" if family == "edgevit" else "52m", {})
