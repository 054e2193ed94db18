"""COCO mAP with pycocotools for any dataset with a COCO annotation file (yolo_backbones.hosts.common.coco_eval / coco_val).

Predictions are built the way YOLOv5's ``--save-json`` writes them for a dataset that is not COCO:
``category_id`` = YOLO class index, ``image_id`` = ``int(stem)`` of the image file.
"""
from __future__ import annotations

import json
import logging
import os
import re
import runpy
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import yaml

import yolo_backbones  # noqa: F401  (installs the plugin into yolov5 below)
import yolov5.utils.metrics
import yolov5.val
from conftest import IMG, run
from yolo_backbones.cli import commands as cli
from yolo_backbones.hosts.yolov5 import coco_val
from yolo_backbones.hosts.common.coco_eval import (STAT_NAMES, category_map, evaluate, format_stats, image_id_map,
                                      load_annotations, to_coco_results)

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "coco8.yaml"
ANNOTATIONS = ROOT / "data" / "coco8" / "annotations" / "instances_coco8.json"
SCRIPT = ROOT / "scripts" / "coco_eval.py"
COCO128 = ROOT.parent / "shared" / "datasets" / "coco128"  # dev/CI machines only
METRIC_LINE = re.compile(r"Average (Precision|Recall) +\((AP|AR)\) @\[ IoU=[\d.:]+ +\| area= *\w+ "
                         r"\| maxDets= *\d+ \] = -?\d\.\d{3}")


@pytest.fixture(scope="module")
def annotations() -> dict:
    return load_annotations(ANNOTATIONS)


@pytest.fixture(scope="module")
def names() -> dict[int, str]:
    return yaml.safe_load(DATA.read_text())["names"]


def yolo_predictions(annotations: dict, names: dict[int, str], jitter: float = 0.0, seed: int = 0) -> list[dict]:
    """The file's own boxes as YOLOv5 would write them (class index, int(stem)), optionally shifted at random."""
    index = {coco_id: k for k, coco_id in category_map(names, annotations).items()}
    stems = {image["id"]: int(Path(image["file_name"]).stem) for image in annotations["images"]}
    rng = np.random.default_rng(seed)
    predictions = []
    for a in annotations["annotations"]:
        x, y, w, h = a["bbox"]
        dx, dy = rng.uniform(-jitter, jitter, 2) * (w, h)
        predictions.append({"image_id": stems[a["image_id"]], "category_id": index[a["category_id"]],
                            "bbox": [x + dx, y + dy, w, h], "score": float(rng.uniform(0.5, 1.0))})
    return predictions


def metric_lines(text: str) -> list[str]:
    """The lines of ``text`` that are one of pycocotools' 12 metric lines."""
    return [line for line in text.splitlines() if METRIC_LINE.search(line)]


def coco8_images(annotations: dict) -> list[str]:
    return [str(ROOT / "data" / "coco8" / "images" / image["file_name"]) for image in annotations["images"]]


def coco_ap(predictions: list[dict], annotations: dict, names) -> dict[str, float]:
    return evaluate(to_coco_results(predictions, annotations, names)[0], annotations)


# --- the functions -------------------------------------------------------------------------------

def test_perfect_predictions_score_1_only_with_the_mapping_by_name(annotations, names) -> None:
    predictions = yolo_predictions(annotations, names)
    assert {p["category_id"] for p in predictions} != {a["category_id"] for a in annotations["annotations"]}
    stats = coco_ap(predictions, annotations, names)
    assert set(stats) == set(STAT_NAMES)
    for key in ("AP", "AP50", "AP75", "AR100"):
        assert stats[key] == pytest.approx(1.0, abs=1e-6), key
    shifted = {k: names[(k + 1) % len(names)] for k in names}  # every class named after the next one
    assert coco_ap(predictions, annotations, shifted)["AP"] < 0.05
    # class index + 1, as if COCO ids had no gaps: right only for the first 11 classes
    naive = [{**p, "category_id": p["category_id"] + 1} for p in predictions]
    assert coco_ap(naive, annotations, None)["AP"] < 0.9


def test_jittered_boxes_score_between_0_and_1(annotations, names) -> None:
    stats = coco_ap(yolo_predictions(annotations, names, jitter=0.15), annotations, names)
    assert 0.0 < stats["AP"] < 1.0 and 0.0 < stats["AP75"] < 1.0
    assert stats["AP"] < stats["AP50"], "loose boxes do better at IoU 0.5 than averaged over 0.5:0.95"


def test_only_the_given_images_are_evaluated(annotations, names) -> None:
    predictions = [p for p in yolo_predictions(annotations, names) if p["image_id"] in (9, 25, 30, 36)]
    results, _ = to_coco_results(predictions, annotations, names)
    assert evaluate(results, annotations, image_ids=[9, 25, 30, 36])["AP"] == pytest.approx(1.0)
    assert evaluate(results, annotations)["AR100"] < 1.0, "the other 4 images' objects count as missed"


def test_missing_class_names_are_listed(annotations, names) -> None:
    renamed = {**names, 3: "motorbike", 62: "tvmonitor"}
    with pytest.raises(ValueError, match=r"2 class name\(s\).*3: 'motorbike', 62: 'tvmonitor'"):
        category_map(renamed, annotations)
    assert category_map({0: "Person", 1: "traffic_light"}, annotations) == {0: 1, 1: 10}, "case and _ are ignored"


def test_image_ids_follow_file_name_stems(annotations) -> None:
    images = [{"id": 7, "file_name": "train/cat_a.jpg"}, {"id": 8, "file_name": "000000000042.png"}]
    custom = {"images": images, "annotations": [], "categories": annotations["categories"]}
    assert image_id_map(custom) == {"cat_a": 7, 42: 8}
    predictions = [{"image_id": "cat_a", "category_id": 0, "bbox": [0, 0, 1, 1], "score": 0.5},
                   {"image_id": 42, "category_id": 0, "bbox": [0, 0, 1, 1], "score": 0.5},
                   {"image_id": 8, "category_id": 0, "bbox": [0, 0, 1, 1], "score": 0.5},  # already the file's id
                   {"image_id": "dog_b", "category_id": 0, "bbox": [0, 0, 1, 1], "score": 0.5}]
    results, dropped = to_coco_results(predictions, custom, ["person"])
    assert [(r["image_id"], r["category_id"]) for r in results] == [(7, 1), (8, 1), (8, 1)] and dropped == 1
    with pytest.raises(ValueError, match="none of the 1 image ids"):
        to_coco_results(predictions[3:], custom, ["person"])


def test_format_is_pycocotools_own(annotations, names, capsys) -> None:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    results, _ = to_coco_results(yolo_predictions(annotations, names, jitter=0.1), annotations, names)
    gt = COCO(str(ANNOTATIONS))
    coco_eval = COCOeval(gt, gt.loadRes(results), "bbox")
    coco_eval.evaluate()
    coco_eval.accumulate()
    capsys.readouterr()
    coco_eval.summarize()
    assert format_stats(evaluate(results, annotations)) == capsys.readouterr().out.rstrip("\n")


# --- scripts/coco_eval.py ------------------------------------------------------------------------

@pytest.mark.slow
def test_script_prints_the_12_metrics(annotations, names, tmp_path: Path) -> None:
    predictions = tmp_path / "best_predictions.json"
    predictions.write_text(json.dumps(yolo_predictions(annotations, names)))
    out = run([sys.executable, str(SCRIPT), str(predictions), str(ANNOTATIONS), "--names", str(DATA)],
              cwd=tmp_path).stdout
    lines = metric_lines(out)
    assert len(lines) == 12, out
    assert lines[0].endswith("= 1.000") and "IoU=0.50:0.95 | area=   all | maxDets=100" in lines[0]


def script_main(*args: str) -> int:
    return runpy.run_path(str(SCRIPT))["main"](list(args))


def test_script_refuses_bad_input(annotations, names, tmp_path: Path, capsys) -> None:
    good = tmp_path / "p.json"
    good.write_text(json.dumps(yolo_predictions(annotations, names)))
    assert script_main(str(tmp_path / "missing.json"), str(ANNOTATIONS)) == 2
    assert "predictions file not found" in capsys.readouterr().err
    assert script_main(str(good), str(tmp_path / "missing.json")) == 2
    assert "annotation file not found" in capsys.readouterr().err
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_text(json.dumps([{**p, "image_id": 123456789} for p in yolo_predictions(annotations, names)]))
    assert script_main(str(elsewhere), str(ANNOTATIONS)) == 2
    assert "none of the 1 image ids" in capsys.readouterr().err
    bad_names = tmp_path / "data.yaml"
    bad_names.write_text(yaml.safe_dump({"names": {**names, 5: "autobus"}}))
    assert script_main(str(good), str(ANNOTATIONS), "--names", str(bad_names)) == 2
    assert "5: 'autobus'" in capsys.readouterr().err


# --- the val.run hook, on a stand-in for YOLOv5's val module -------------------------------------

def stand_in_val(predictions: list[dict] | None, images: list[str]) -> types.ModuleType:
    """A module with YOLOv5 val.py's names: ``run`` writes ``predictions`` like YOLOv5 and tries pycocotools."""
    val = types.ModuleType("stand_in_val")
    val.calls = []
    val.LOGGER = logging.getLogger("stand_in_val")
    val.check_dataset = yolov5.val.check_dataset
    val.increment_path = yolov5.val.increment_path
    val.coco80_to_coco91_class = yolov5.val.coco80_to_coco91_class
    val.check_requirements = lambda *a, **k: val.calls.append(("check_requirements", a))
    val.create_dataloader = lambda *a, **k: (None, types.SimpleNamespace(im_files=images))
    val.save_one_json = lambda *a, **k: None

    def run(data, weights=None, save_json=False, project="runs/val", name="exp", exist_ok=False, single_cls=False,
            model=None, dataloader=None, save_dir=Path("")):
        save_dir = val.increment_path(Path(project) / name, exist_ok=exist_ok)
        save_dir.mkdir(parents=True, exist_ok=True)
        val.create_dataloader("images", 128)
        if save_json and predictions:
            (save_dir / f"{Path(weights).stem}_predictions.json").write_text(json.dumps(predictions))
            try:
                val.check_requirements("pycocotools>=2.0.6")
                val.calls.append("YOLOv5's own pycocotools step")
            except Exception as e:
                val.calls.append(f"pycocotools unable to run: {e}")
        return (0.5, 0.6, 0.7, 0.8, 1.0, 2.0, 3.0), np.zeros(80), np.zeros(80), (1.0, 2.0, 3.0)

    val.run = run
    coco_val.patch_val(val)
    return val


def test_val_run_evaluates_a_dataset_with_coco_json(annotations, names, tmp_path: Path, caplog) -> None:
    val = stand_in_val(yolo_predictions(annotations, names), coco8_images(annotations))
    coco_val.patch_val(val)  # idempotent
    assert val.run.__wrapped__.__name__ == "run" and not hasattr(val.run.__wrapped__, "__wrapped__")
    with caplog.at_level(logging.INFO, logger="stand_in_val"):
        metrics, *rest = val.run(data=str(DATA), weights="w/best.pt", save_json=True, project=str(tmp_path))
    assert metrics == (0.5, 0.6, pytest.approx(1.0), pytest.approx(1.0), 1.0, 2.0, 3.0)
    assert len(rest) == 3, "YOLOv5's other results are returned as they were"
    assert val.calls == [f"pycocotools unable to run: skipped here; yolo_backbones evaluates against {ANNOTATIONS} "
                         "below"], "YOLOv5's own pycocotools step is skipped, the other requirement checks are not"
    assert sum(bool(METRIC_LINE.search(r.getMessage())) for r in caplog.records) == 1  # one record, 12 lines
    assert len(metric_lines(caplog.text)) == 12
    written = json.loads((tmp_path / "exp" / "best_predictions.json").read_text())
    assert {p["category_id"] for p in written} == {a["category_id"] for a in annotations["annotations"]}
    assert {p["image_id"] for p in written} == {image["id"] for image in annotations["images"]}

    # the images of the run count, also those without predictions
    val = stand_in_val([p for p in yolo_predictions(annotations, names) if p["image_id"] == 9],
                       coco8_images(annotations))
    metrics, *_ = val.run(data=str(DATA), weights="best.pt", save_json=True, project=str(tmp_path))
    assert metrics[3] < 0.5


def test_val_run_without_predictions_keeps_yolov5_results(tmp_path: Path, caplog) -> None:
    val = stand_in_val(None, [])
    with caplog.at_level(logging.INFO, logger="stand_in_val"):
        metrics, *_ = val.run(data=str(DATA), weights="best.pt", save_json=True, project=str(tmp_path))
    assert metrics == (0.5, 0.6, 0.7, 0.8, 1.0, 2.0, 3.0)
    assert "no predictions" in caplog.text and "mAP50 and mAP50-95 are YOLOv5's own" in caplog.text


def test_coco_json_argument_flag_and_key(annotations, names, tmp_path: Path) -> None:
    keyless = tmp_path / "keyless.yaml"
    keyless.write_text(yaml.safe_dump({"path": str(ROOT / "data" / "coco8"), "train": "images", "val": "images",
                                       "names": names}))
    val = stand_in_val(yolo_predictions(annotations, names), coco8_images(annotations))
    assert val.run(data=str(keyless), weights="a.pt", save_json=True, project=str(tmp_path))[0][3] == 0.8, \
        "no annotation file: YOLOv5's results"
    assert val.run(data=str(keyless), weights="a.pt", project=str(tmp_path), coco_json=ANNOTATIONS)[0][3] == 1.0, \
        "coco_json= asks for the evaluation (save_json implied)"
    argv = ["--weights", "a.pt", "--coco-json", str(ANNOTATIONS), "--img", "128"]
    cli._pop_coco_json(argv)
    try:
        assert argv == ["--weights", "a.pt", "--img", "128", "--save-json"]
        assert val.run(data=str(keyless), weights="a.pt", save_json=True, project=str(tmp_path))[0][3] == 1.0
    finally:
        coco_val.set_coco_json(None)
    with pytest.raises(SystemExit, match="--coco-json: no such file"):
        cli._pop_coco_json(["--coco-json=nope.json"])


def test_host_mean_average_precision_runs_on_numpy_2_4() -> None:
    """YOLOv5's compute_ap calls np.trapz (gone in numpy 2.4): val.py crashed once a detection was right."""
    ap, _, _ = yolov5.utils.metrics.compute_ap(np.array([0.5, 1.0]), np.array([1.0, 0.5]))
    assert 0.5 < ap < 1.0


# --- the real val.py -----------------------------------------------------------------------------

@pytest.mark.slow
def test_val_py_prints_coco_map_on_the_embedded_data(trained: Path, tmp_path: Path, annotations) -> None:
    proc = run([sys.executable, str(ROOT / "val.py"), "--weights", str(trained), "--img", str(IMG), "--device", "cpu",
                "--batch-size", "4", "--save-json", "--conf-thres", "0", "--project", str(tmp_path), "--name", "val"],
               cwd=tmp_path)
    out = proc.stdout + proc.stderr
    assert "pycocotools mAP (yolo_backbones) of" in out and "on 8 images" in out, out[-3000:]
    assert len(metric_lines(out)) == 12, out[-3000:]
    written = json.loads((tmp_path / "val" / "best_predictions.json").read_text())
    assert {p["image_id"] for p in written} <= {image["id"] for image in annotations["images"]}
    assert {p["category_id"] for p in written} <= {c["id"] for c in annotations["categories"]}


@pytest.mark.slow
def test_val_py_coco_json_flag(trained: Path, tmp_path: Path) -> None:
    data = yaml.safe_load(DATA.read_text())
    data.pop("coco_json")
    data["path"] = str(ROOT / "data" / "coco8")
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump(data))
    proc = run([sys.executable, str(ROOT / "val.py"), "--weights", str(trained), "--data", "mine.yaml", "--img",
                str(IMG), "--device", "cpu", "--batch-size", "4", "--conf-thres", "0", "--coco-json", str(ANNOTATIONS),
                "--project", str(tmp_path), "--name", "val"], cwd=tmp_path)
    out = proc.stdout + proc.stderr
    assert "save_json=True" in out, "--coco-json implies --save-json"
    assert len(metric_lines(out)) == 12, out[-3000:]


@pytest.mark.skipif(not (COCO128 / "annotations" / "instances_train2017.json").is_file(),
                    reason="../shared/datasets/coco128 exists on dev/CI machines only")
@pytest.mark.slow
def test_val_py_on_coco128(trained: Path, tmp_path: Path, names) -> None:
    """8 coco128 images (not those of coco8) against coco128's COCO annotations, which hold 128 images."""
    images = sorted((COCO128 / "images" / "train2017").glob("*.jpg"))[8:16]
    (tmp_path / "val8.txt").write_text("".join(f"{p}\n" for p in images))  # labels cache goes beside this file
    (tmp_path / "coco128.yaml").write_text(yaml.safe_dump({
        "path": str(tmp_path), "train": "val8.txt", "val": "val8.txt", "names": names,
        "coco_json": str(COCO128 / "annotations" / "instances_train2017.json")}))
    proc = run([sys.executable, str(ROOT / "val.py"), "--weights", str(trained), "--data", "coco128.yaml", "--img",
                str(IMG), "--device", "cpu", "--batch-size", "4", "--save-json", "--conf-thres", "0", "--project",
                str(tmp_path), "--name", "val"], cwd=tmp_path)
    out = proc.stdout + proc.stderr
    assert "on 8 images" in out and len(metric_lines(out)) == 12, out[-3000:]


@pytest.mark.skipif(not os.environ.get("YOLOV5_CLONE"),
                    reason="set YOLOV5_CLONE=/path/to/ultralytics/yolov5 to test a clone")
@pytest.mark.slow
def test_val_py_coco_json_through_a_yolov5_clone(trained: Path, tmp_path: Path) -> None:
    proc = run([sys.executable, str(ROOT / "val.py"), "--yolov5-dir", os.environ["YOLOV5_CLONE"], "--weights",
                str(trained), "--img", str(IMG), "--device", "cpu", "--batch-size", "4", "--conf-thres", "0",
                "--coco-json", str(ANNOTATIONS), "--project", str(tmp_path), "--name", "val"], cwd=tmp_path)
    out = proc.stdout + proc.stderr
    assert len(metric_lines(out)) == 12, out[-3000:]
