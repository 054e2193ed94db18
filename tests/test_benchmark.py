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


def table_cells(markdown: str) -> dict[str, dict[str, str]]:
    """``{model: {column: cell}}`` of the benchmark table; a column is named by its header's first words, so that
    tests do not depend on where optional columns (INT8, edge engines) sit."""
    header, *rows = table_rows(markdown)
    return {r[0]: dict(zip(header, r, strict=True)) for r in rows}


def cell(row: dict[str, str], prefix: str) -> str:
    """The cell of the one column whose header starts with ``prefix``."""
    (key,) = [k for k in row if k.startswith(prefix)]
    return row[key]


@pytest.mark.slow
def test_markdown_has_columns_and_a_row_per_model(out) -> None:
    rows = table_rows((out / "benchmark.md").read_text())
    assert rows[0] == HEADERS
    assert [r[0] for r in rows[1:]] == MODELS
    assert all(len(r) == len(HEADERS) for r in rows)
    assert not any("error" in c for r in rows for c in r), rows


@pytest.mark.slow
def test_ratios_to_yolov5s(out) -> None:
    rows = table_cells((out / "benchmark.md").read_text())
    with_ratio = ["params", "GFLOPs @", "eager ms", "ONNX ms", "OpenVINO ms", "OpenVINO INT8 ms", "train img/s",
                  "GFLOP/s"]  # every measured figure but the INT8 speed-up (a ratio itself)
    for k in with_ratio:
        assert cell(rows["yolov5s"], k).endswith("(1.00x)"), (k, rows["yolov5s"])
        assert re.fullmatch(r"[0-9.]+ \([0-9.]+x\)", cell(rows[MODEL], k)), (k, rows[MODEL])
    assert all(re.fullmatch(r"[0-9.]+x", cell(rows[name], "INT8 speed-up")) for name in rows)
    assert cell(rows[MODEL], "target") in {"ok", "below target"}
    assert cell(rows["yolov5s"], "target") == "baseline"
    assert all(cell(rows[name], "vs CNN curve") == "1.00" for name in ("yolov5n", "yolov5s", "yolov5m"))
    assert re.fullmatch(r"[0-9.]+", cell(rows[MODEL], "vs CNN curve"))
    # --reference / --train-memory not asked for
    assert [cell(rows[MODEL], k) for k in ("vs reference", "train mem", "ckpt mem")] == ["-", "-", "-"]
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
    rows = table_cells((out / "benchmark.md").read_text())
    assert cell(rows["yolov5n-half"], "target") == "baseline"


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
    monkeypatch.setattr(sys.modules["benchmarking.train_memory"], "train_peak_memory_gb",
                        lambda cfg, batch, img, ckpt, threads: 1.5 if ckpt else 2.5)
    argv = ["--models", "yolov5_efficientformerv2_s0.yaml", "--img", "64", "--runs", "1", "--warmup", "0",
            "--no-train", "--no-onnx", "--no-openvino", "--no-int8", "--no-explain", "--threads", "1", "--reference",
            "--train-memory", "--out", str(tmp_path)]
    assert script.main(argv) == 0
    rows = table_cells((tmp_path / "benchmark.md").read_text())
    ef = rows["yolov5_efficientformerv2_s0"]
    assert re.fullmatch(r"[0-9.]+x / [0-9.]+x / [0-9.]+x", cell(ef, "vs reference"))
    assert [cell(ef, "train mem"), cell(ef, "ckpt mem")] == ["2.50 (1.00x)", "1.50"]
    # checkpointing is a backbone option
    assert [cell(rows["yolov5s"], "train mem"), cell(rows["yolov5s"], "ckpt mem")] == ["2.50 (1.00x)", "-"]


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
    row = table_cells((tmp_path / "benchmark.md").read_text())[MODEL]
    # OpenVINO (FP32 and INT8) converts the ONNX export
    for k in ("ONNX ms", "OpenVINO ms", "OpenVINO INT8 ms"):
        assert cell(row, k) == "error: RuntimeError: export exploded", k
    assert cell(row, "train img/s") == "-"  # --no-train
    assert cell(row, "eager ms").endswith("x)")


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


# ------------------------------------------------------------------------------------------ edge engines
EDGE_COLUMNS = ["LiteRT ms", "LiteRT vs CNN", "LiteRT INT8 ms", "NCNN ms", "NCNN vs CNN", "ExecuTorch ms",
                "ExecuTorch vs CNN"]


def test_edge_engines_are_off_unless_asked_for() -> None:
    script = load_script()
    args = script.parse_args([])
    assert (args.edge, args.litert, args.ncnn, args.executorch) == (False, False, False, False)
    args = script.parse_args(["--edge", "--no-ncnn"])
    assert (args.litert, args.ncnn, args.executorch) == (True, False, True)
    assert [e.key for e in script.exported_engines(args)] == ["onnx_ms", "openvino_ms", "openvino_int8_ms",
                                                              "litert_ms", "litert_int8_ms", "executorch_ms"]
    args = script.parse_args(["--edge", "--no-int8"])
    assert [e.key for e in script.exported_engines(args)] == ["onnx_ms", "openvino_ms", "litert_ms", "ncnn_ms",
                                                              "executorch_ms"]


def test_each_engine_is_judged_against_its_own_cnn_curve() -> None:
    """The eager efficiency keeps the YOLOv5 n/s/m curve; an edge engine's uses the CNNs of its own curve timed on
    that engine, interpolated in log GFLOPs."""
    script = load_script()
    R = script.Result
    # GFLOP/s = GFLOPs / (ms / 1000): eager yolov5n 10, yolov5s 40; LiteRT yolov5n 20, yolo11s 80
    results = [R("yolov5n", False, gflops=1.0, eager_ms=100.0, gflops_per_s=10.0, litert_ms=50.0),
               R("yolov5s", False, gflops=4.0, eager_ms=100.0, gflops_per_s=40.0),
               R("yolov5m", False, gflops=16.0, eager_ms=400.0, gflops_per_s=40.0, litert_ms=1.0),
               R("yolo11s", False, gflops=4.0, eager_ms=200.0, gflops_per_s=20.0, litert_ms=50.0),
               R("plugin", True, gflops=2.0, eager_ms=200.0, gflops_per_s=10.0, litert_ms=50.0)]
    script.apply_curve(results)
    assert results[4].efficiency == pytest.approx(10.0 / 25.0)  # eager curve at 2 GFLOPs: halfway 10..40
    assert results[1].efficiency == pytest.approx(1.0)
    litert = next(e for e in script.ENGINES if e.key == "litert_ms")
    script.apply_engine_curves(results, [litert])
    # LiteRT curve: yolov5n (1, 20) and yolo11s (4, 80); yolov5m is not on it and yolov5s was not converted
    assert results[4].litert_vs_cnn == pytest.approx(40.0 / 50.0)
    assert results[0].litert_vs_cnn == pytest.approx(1.0) and results[3].litert_vs_cnn == pytest.approx(1.0)
    assert results[1].litert_vs_cnn is None
    assert results[4].efficiency == pytest.approx(0.4)  # eager untouched
    assert script.efficiencies(results, ("nothing",), "litert_ms")["plugin"] is None


def test_edge_engines_skip_baselines_off_their_curve_and_the_fastest_engine_is_named() -> None:
    script = load_script()
    R = script.Result
    ncnn = next(e for e in script.ENGINES if e.key == "ncnn_ms")
    assert ncnn.measures(R("x", True)) and ncnn.measures(R("yolo11n", False)) and ncnn.measures(R("yolov5s", False))
    assert ncnn.measures(R("yolov5n-half", False))  # the small CNN: the curve below YOLOv5n
    assert not ncnn.measures(R("yolov5m", False)) and not ncnn.measures(R("yolo11m", False))
    res = R("x", True, eager_ms=30.0, onnx_ms=12.0, ncnn_ms=9.0, litert_ms=None, executorch_ms=11.0)
    assert script.fastest_engine(res) == "NCNN"
    res.openvino_int8_ms = 5.0  # INT8 is another accuracy: the fastest engine is a float32 one
    assert script.fastest_engine(res) == "NCNN"
    assert script.fastest_engine(R("x", True)) is None


def test_a_model_below_yolov5n_meets_the_small_cnn_on_an_edge_curve() -> None:
    """Below YOLOv5n an edge engine's curve runs down to the small CNN (yolov5n at width 0.125) measured on that
    engine, instead of staying flat at YOLOv5n's GFLOP/s; below the small CNN it is flat at the small CNN's."""
    script = load_script()
    R = script.Result
    # LiteRT GFLOP/s: yolov5n-half 0.25 / 5 ms = 50, yolov5n 1 / 10 ms = 100
    results = [R("yolov5n-half", False, gflops=0.25, litert_ms=5.0), R("yolov5n", False, gflops=1.0, litert_ms=10.0),
               R("mid", True, gflops=0.5, litert_ms=10.0), R("tiny", True, gflops=0.2, litert_ms=8.0)]
    litert = next(e for e in script.ENGINES if e.key == "litert_ms")
    script.apply_engine_curves(results, [litert])
    assert results[2].litert_vs_cnn == pytest.approx(50.0 / 75.0)  # halfway in log GFLOPs: 75 GFLOP/s expected
    assert results[3].litert_vs_cnn == pytest.approx(25.0 / 50.0)  # flat below the small CNN
    args = script.parse_args(["--edge"])
    # the smaller target applies below the smallest CNN of the engine's curve only
    assert script.target_for(results[3], results, args, litert.curve) == args.target_small
    assert script.target_for(results[2], results, args, litert.curve) == args.target


def test_each_engine_converts_every_model_first_then_times_them_interleaved() -> None:
    """time_engine: all conversions happen before the first timed run, the timed runs visit the models in turn
    round after round, and a failed conversion or first run is recorded in that model's errors alone."""
    script = load_script()
    R = script.Result
    events: list[tuple[str, str]] = []

    def runner(model, img, threads, folder):
        if model == "broken":
            raise RuntimeError("converter refused the graph")
        events.append(("convert", model))
        if model == "crashes":
            def crash(x):
                raise ValueError("runtime rejected the input")
            return crash
        return lambda x: events.append(("run", model)) or [x.shape]

    engine = script.ENGINES[0].__class__("ncnn_ms", "NCNN", "ncnn", runner, "test", ("a", "b"), "ncnn_vs_cnn", True)
    results = [R("a", False), R("b", False), R("c", True), R("bad", True), R("crash", True), R("off", False)]
    models = {"a": "a", "b": "b", "c": "c", "bad": "broken", "crash": "crashes", "off": "off"}
    script.time_engine(engine, results, models, img=8, warmup=1, runs=6, rounds=3, threads=1)
    converted = [m for kind, m in events if kind == "convert"]
    assert converted == ["a", "b", "c", "crashes"]  # "off" is neither a plugin nor on the curve
    first_timed = next(i for i, (kind, _) in enumerate(events) if kind == "run")
    assert all(kind == "convert" for kind, _ in events[:first_timed])
    runs = [m for kind, m in events if kind == "run"]
    # per model: 1 check + 1 warm-up, then 3 rounds of 2 timed runs visiting a, b, c in turn
    assert runs[6:] == ["a", "a", "b", "b", "c", "c"] * 3
    assert all(r.ncnn_ms > 0 for r in results[:3])
    assert results[3].ncnn_ms is None and "converter refused" in results[3].errors["ncnn_ms"]
    assert results[4].ncnn_ms is None and "runtime rejected" in results[4].errors["ncnn_ms"]
    assert results[5].ncnn_ms is None and results[5].errors == {}


def test_edge_table_flags_engines_below_target_and_says_it_is_a_proxy() -> None:
    script = load_script()
    R = script.Result
    args = script.parse_args(["--edge", "--img", "320"])
    results = [R("yolov5n", False, gflops=1.0, litert_ms=50.0, ncnn_ms=40.0, executorch_ms=45.0),
               R("yolov5s", False, gflops=4.0, litert_ms=100.0, ncnn_ms=80.0, executorch_ms=90.0),
               R("yolov5m", False, gflops=16.0, eager_ms=100.0),
               R("slow", True, gflops=2.0, eager_ms=10.0, litert_ms=200.0, litert_int8_ms=90.0, ncnn_ms=50.0,
                 executorch_ms=60.0)]
    script.apply_engine_curves(results, script.exported_engines(args))
    for res in results:
        res.fastest_engine = script.fastest_engine(res)
    text = script.markdown_table(results, args)
    section = text[text.index("### Edge engines"):]
    rows = table_rows(section)
    assert rows[0] == ["model", *EDGE_COLUMNS, "edge target >= 0.70", "fastest engine"]
    assert [r[0] for r in rows[1:]] == ["yolov5n", "yolov5s", "slow"]  # yolov5m is not on the edge curve
    slow = rows[-1]
    assert slow[1] == "200.0 (2.00x)" and slow[2] == "0.33"  # 10 GFLOP/s vs the curve's 30 at 2 GFLOPs (20..40)
    assert slow[3].startswith("90.0") and rows[1][3] == "-"  # INT8: no efficiency, never the fastest engine
    assert slow[-2] == "below: LiteRT" and slow[-1] == "PyTorch eager"
    assert rows[1][-2] == "baseline"
    assert "proxy" in section and "x86" in section
    assert "### Edge engines" not in script.markdown_table(results, script.parse_args([]))


@pytest.mark.slow
def test_edge_run_converts_and_times_ncnn(tmp_path) -> None:
    """--edge (NCNN only, the fastest converter) at tiny settings: the plugin model and the edge curve's CNNs (the
    small CNN among them) get a latency and an efficiency; YOLOv5m is not converted."""
    pytest.importorskip("pnnx")
    pytest.importorskip("ultralytics")
    script = load_script()
    argv = ["--models", f"{MODEL}.yaml", "--img", "64", "--runs", "1", "--warmup", "0", "--rounds", "1",
            "--no-train", "--no-explain", "--no-onnx", "--no-openvino", "--no-int8", "--threads", "1", "--edge",
            "--no-litert", "--no-executorch", "--out", str(tmp_path)]
    assert script.main(argv) == 0
    data = {r["name"]: r for r in json.loads((tmp_path / "benchmark.json").read_text())["results"]}
    for name in ("yolov5n-half", "yolov5n", "yolov5s", "yolo11n", "yolo11s", MODEL):
        assert data[name]["ncnn_ms"] > 0 and data[name]["ncnn_vs_cnn"] > 0, data[name]
        assert data[name]["fastest_engine"] in {"PyTorch eager", "NCNN"}
    assert data["yolov5m"]["ncnn_ms"] is None
    assert data["yolov5m"]["errors"] == {} and data[MODEL]["litert_ms"] is None
    section = (tmp_path / "benchmark.md").read_text().split("### Edge engines")[1]
    rows = {r[0]: r for r in table_rows(section)[1:]}
    assert set(rows) == {"yolov5n-half", "yolov5n", "yolov5s", "yolo11n", "yolo11s", MODEL}
    assert re.fullmatch(r"[0-9.]+", rows[MODEL][2]) and rows[MODEL][-2] in {"ok", "below: NCNN"}


@pytest.mark.slow
def test_openvino_int8_is_calibrated_in_a_child_process(tmp_path, monkeypatch) -> None:
    """The benchmark's OpenVINO INT8 runner quantizes in a child (NNCF never loads in the timing process), and its
    INT8 model keeps the FP32 one's outputs; a child that fails is one error with the child's message."""
    pytest.importorskip("nncf")
    load_script()  # puts scripts/ on sys.path
    from benchmarking import engines
    from benchmarking.models import baseline_yaml, build_detector

    from yolo_backbones.deploy.int8.accuracy import cosine

    had_nncf = "nncf" in sys.modules
    model = build_detector(baseline_yaml("yolov5n.yaml"))
    x = engines.random_image(64)
    for folder in ("fp32", "int8", "bad"):
        (tmp_path / folder).mkdir()
    fp32 = engines.openvino_runner(model, 64, 1, tmp_path / "fp32")(x)[0]
    int8 = engines.openvino_int8_runner(model, 64, 1, tmp_path / "int8")(x)[0]
    assert (tmp_path / "int8" / "ov_int8" / "model.xml").is_file()
    assert had_nncf or "nncf" not in sys.modules
    assert int8.shape == fp32.shape
    assert cosine(fp32, int8) > 0.99
    monkeypatch.setattr(engines, "_QUANTIZE_OPENVINO", "raise ValueError('no calibration images found')")
    with pytest.raises(RuntimeError, match="(?s)NNCF INT8 quantization failed: .*no calibration images found"):
        engines.openvino_int8_runner(model, 64, 1, tmp_path / "bad")
