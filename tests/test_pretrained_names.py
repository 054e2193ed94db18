"""Pretrained weights by name in a YAML row and in create(), safetensors files, and optimizer groups of the hosts."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import save_file
from torch import nn

import yolo_backbones

from helpers import single_thread  # noqa: F401  (autouse fixture)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def weights_dir(tmp_path, monkeypatch) -> Path:
    """An offline machine whose weights folder ($YOLO_BACKBONES_WEIGHTS) is empty to start with."""
    monkeypatch.setenv("YOLO_BACKBONES_WEIGHTS", str(tmp_path))
    monkeypatch.setenv("YOLO_BACKBONES_OFFLINE", "1")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    return tmp_path


def _timm_s0_file(folder: Path) -> dict[str, torch.Tensor]:
    """timm's EfficientFormerV2-S0 with random weights, saved as the Hub's safetensors under its documented name."""
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    reference = timm.create_model("efficientformerv2_s0", pretrained=False)
    state = {k: v.contiguous() for k, v in reference.state_dict().items()}
    save_file(state, str(folder / "efficientformerv2_s0.snap_dist_in1k.safetensors"))
    return state


def test_create_by_name_loads_the_hub_safetensors_in_timm_keys(weights_dir: Path) -> None:
    state = _timm_s0_file(weights_dir)
    model = yolo_backbones.create("efficientformerv2_s0", pretrained="imagenet")
    torch.testing.assert_close(model.stem[0].weight if hasattr(model, "stem") else next(model.parameters()),
                               state["stem.conv1.conv.weight"])
    with pytest.raises(FileNotFoundError, match=r"eformer_s0_450\.pth"):  # the official file is not there
        yolo_backbones.create("efficientformerv2_s0", pretrained="official")


def test_yaml_row_with_a_weights_name_builds_a_pretrained_detector(weights_dir: Path) -> None:
    state = _timm_s0_file(weights_dir)
    from yolov5.models.yolo import DetectionModel

    cfg = yaml.safe_load((ROOT / "models" / "yolov5_efficientformerv2_s0.yaml").read_text())
    cfg["backbone"][0][3] = ["s0", [1, 2, 3], "imagenet"]
    model = DetectionModel(cfg, ch=3, nc=80)
    backbone = model.model[0]
    torch.testing.assert_close(next(backbone.parameters()), state["stem.conv1.conv.weight"])


def test_unknown_weights_name_lists_the_known_ones(weights_dir: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"no weights named .imagenet21k.*names: imagenet, official, timm"):
        yolo_backbones.create("efficientformerv2_s0", pretrained="imagenet21k")


def _backbone_params_by_group(optimizer: torch.optim.Optimizer, backbone: nn.Module) -> dict[str, float]:
    decay = {id(p): g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}
    return {name: decay[id(p)] for name, p in backbone.named_parameters()}


def _norm_and_bias_names(backbone: nn.Module) -> list[str]:
    names = []
    for module_name, module in backbone.named_modules():
        is_norm = isinstance(module, (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm))
        for p_name, _ in module.named_parameters(recurse=False):
            if p_name == "bias" or is_norm:
                names.append(f"{module_name}.{p_name}" if module_name else p_name)
    return names


@pytest.mark.parametrize("yaml_name", ["yolov5_edgevit.yaml", "yolov5_mobileformer.yaml",
                                       "yolov5_efficientformer.yaml", "yolov5_efficientformerv2_s0.yaml"])
def test_yolov5_optimizer_puts_backbone_norms_and_biases_in_no_decay_groups(yaml_name: str) -> None:
    from yolov5.models.yolo import DetectionModel
    from yolov5.utils.torch_utils import smart_optimizer

    model = DetectionModel(str(ROOT / "models" / yaml_name), ch=3, nc=80)
    optimizer = smart_optimizer(model, "SGD", lr=0.01, momentum=0.9, decay=5e-4)
    decay = _backbone_params_by_group(optimizer, model.model[0])
    exempt = _norm_and_bias_names(model.model[0])
    assert exempt and all(decay[name] == 0 for name in exempt), [n for n in exempt if decay[n] != 0][:5]
    convs = [n for n, p in model.model[0].named_parameters() if p.ndim == 4]
    assert convs and all(decay[n] > 0 for n in convs)


@pytest.mark.parametrize("yaml_name",
                         ["yolo11_edgevit.yaml", "yolo11_mobileformer.yaml", "yolo11_efficientformer.yaml"])
def test_ultralytics_optimizer_puts_backbone_norms_and_biases_in_no_decay_groups(yaml_name: str) -> None:
    import types

    from ultralytics.engine.trainer import BaseTrainer
    from ultralytics.nn.tasks import DetectionModel

    model = DetectionModel(str(ROOT / "models" / yaml_name), nc=80, verbose=False)
    trainer = types.SimpleNamespace(args=types.SimpleNamespace(lr0=0.01, warmup_bias_lr=0.0, optimizer="SGD"))
    optimizer = BaseTrainer.build_optimizer(trainer, model, name="SGD", lr=0.01, momentum=0.9, decay=5e-4)
    decay = _backbone_params_by_group(optimizer, model.model[0])
    exempt = _norm_and_bias_names(model.model[0])
    assert exempt and all(decay[name] == 0 for name in exempt), [n for n in exempt if decay[n] != 0][:5]
    convs = [n for n, p in model.model[0].named_parameters() if p.ndim == 4]
    assert convs and all(decay[n] > 0 for n in convs)
