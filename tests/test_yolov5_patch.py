"""The patch layer: parse_model channel bookkeeping, Select, errors, idempotence, forward extensions."""
from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

import yolo_backbones
from yolo_backbones import ModelConfigError, Select
from yolo_backbones.hosts.yolov5.model_patch import patch_yolo_module
from yolo_backbones.resources import MODELS_DIR

yolo = pytest.importorskip("yolov5.models.yolo")


def load_cfg(name: str = "yolov5_edgevit.yaml") -> dict:
    return yaml.safe_load((MODELS_DIR / name).read_text())


def build(cfg: dict, **kw) -> torch.nn.Module:
    return yolo.Model(copy.deepcopy(cfg), **kw)


@pytest.fixture(scope="module")
def edgevit_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build(load_cfg())


def test_plugin_is_installed_into_the_pip_namespace() -> None:
    assert yolo.__dict__["EdgeViT"] is yolo_backbones.core.registry.backbone_classes()["EdgeViT"]
    assert yolo.__dict__["Select"] is Select
    assert patch_yolo_module(yolo) is False, "second patch must be a no-op"
    assert yolo_backbones.install() == []


def test_channel_bookkeeping_comes_from_backbone_metadata(edgevit_model) -> None:
    layers = edgevit_model.model
    backbone = layers[0]
    assert backbone.out_channels == [72, 144, 288] and backbone.out_strides == [8, 16, 32]
    # Select rows pass the selected map's channels on; SPPF consumes P5 (288 channels).
    assert [type(m) for m in layers[1:4]] == [Select] * 3
    assert layers[4].cv1.conv.in_channels == 288
    # The P4 concat (layer 7) feeds C3 with 128 (neck) + 144 (P4) channels; P3 concat 64 + 72.
    assert layers[8].cv1.conv.in_channels == 128 + 144
    assert layers[12].cv1.conv.in_channels == 64 + 72
    detect = layers[-1]
    assert [c.in_channels for c in detect.m] == [64, 128, 256]
    assert edgevit_model.stride.tolist() == [8.0, 16.0, 32.0]
    assert 0 in edgevit_model.save and {1, 2}.issubset(edgevit_model.save)


@pytest.mark.parametrize("hw", [(256, 256), (320, 192), (160, 480)])
def test_forward_shapes_train_and_eval(edgevit_model, hw) -> None:
    h, w = hw
    x = torch.rand(2, 3, h, w)
    edgevit_model.train()
    out = edgevit_model(x)
    assert [tuple(o.shape) for o in out] == [(2, 3, h // s, w // s, 85) for s in (8, 16, 32)]
    edgevit_model.eval()
    with torch.no_grad():
        pred, maps = edgevit_model(x)
    assert pred.shape == (2, 3 * sum((h // s) * (w // s) for s in (8, 16, 32)), 85)


def test_unpatched_yolov5_forward_gives_the_same_result(edgevit_model) -> None:
    """Checkpoints must run under a YOLOv5 that never saw the plugin's _forward_once."""
    edgevit_model.eval()
    x = torch.rand(1, 3, 128, 160)
    with torch.no_grad():
        ours = edgevit_model(x)[0]
        stock = yolo.BaseModel._yolo_backbones_stock_forward_once(edgevit_model, x)[0]
    torch.testing.assert_close(ours, stock)


@pytest.mark.slow
def test_visualize_saves_each_backbone_map(edgevit_model, tmp_path: Path) -> None:
    edgevit_model.eval()
    with torch.no_grad():
        edgevit_model(torch.rand(1, 3, 64, 64), visualize=tmp_path)
    names = {p.name for p in tmp_path.glob("*.png")}
    assert {f"stage0_EdgeViT_{k}_features.png" for k in range(3)} <= names
    assert "stage1_Select_features.png" in names


def test_profile_reports_every_layer(edgevit_model, capsys, caplog) -> None:
    edgevit_model.eval()
    with torch.no_grad():
        edgevit_model(torch.rand(1, 3, 64, 64), profile=True)
    text = caplog.text + capsys.readouterr().out
    assert "yolo_backbones.core.edgevit.model.EdgeViT" in text and "Total" in text


def _cfg_with(backbone_rows: list, head_rows: list | None = None) -> dict:
    cfg = load_cfg()
    cfg["backbone"] = backbone_rows + cfg["backbone"][len(backbone_rows):]
    if head_rows is not None:
        cfg["head"] = head_rows
    return cfg


def test_unknown_backbone_name_lists_the_known_ones() -> None:
    with pytest.raises(ModelConfigError, match=r"unknown module 'EdgeVit'.*Did you mean EdgeViT.*EdgeViT"):
        build(_cfg_with([[-1, 1, "EdgeVit", ["xxs", [1, 2, 3]]]]))


def test_unknown_variant_lists_the_variants() -> None:
    with pytest.raises(ModelConfigError, match=r"layer 0 .*unknown EdgeViT variant 'xxxs'.*xxs, xs, s"):
        build(_cfg_with([[-1, 1, "EdgeViT", ["xxxs", [1, 2, 3]]]]))


def test_select_index_out_of_range_names_the_valid_range() -> None:
    rows = [[-1, 1, "EdgeViT", ["xxs", [1, 2, 3]]], [0, 1, "Select", [0]], [0, 1, "Select", [1]],
            [0, 1, "Select", [3]]]
    with pytest.raises(ModelConfigError, match=r"layer 3: Select index 3 is out of range.*returns 3 maps.*0\.\.2"):
        build(_cfg_with(rows))


def test_layer_fed_a_list_without_select_is_rejected() -> None:
    rows = [[-1, 1, "EdgeViT", ["xxs", [1, 2, 3]]], [0, 1, "Select", [0]], [0, 1, "Select", [1]],
            [0, 1, "Conv", [256, 1, 1]]]
    with pytest.raises(ModelConfigError, match=r"layer 3 \(Conv\) is fed layer 0, which returns a list.*Select"):
        build(_cfg_with(rows))


def test_select_fed_a_tensor_is_rejected() -> None:
    rows = [[-1, 1, "EdgeViT", ["xxs", [1, 2, 3]]], [0, 1, "Select", [0]], [-1, 1, "Select", [0]]]
    with pytest.raises(ModelConfigError, match=r"layer 2: Select is fed layer -1, which returns a single tensor"):
        build(_cfg_with(rows))


def test_backbone_with_repeats_is_rejected() -> None:
    with pytest.raises(ModelConfigError, match=r"backbone row must have n=1"):
        build(_cfg_with([[-1, 2, "EdgeViT", ["xxs", [1, 2, 3]]]]))


def test_stock_yolov5_yaml_still_builds_identically() -> None:
    """The replacement parse_model must not change what it builds for plain YOLOv5 YAMLs."""
    cfg = yaml.safe_load((Path(yolo.__file__).parents[1] / "models" / "yolov5n.yaml").read_text())
    model = build(cfg)
    assert sum(p.numel() for p in model.parameters()) == 1_872_157  # YOLOv5n, 80 classes (YOLOv5 README: 1.9M)
    assert model.stride.tolist() == [8.0, 16.0, 32.0]


@pytest.mark.slow
def test_import_never_loads_a_second_yolov5_copy() -> None:
    code = ("import yolo_backbones, sys; assert 'yolov5' not in sys.modules and 'models' not in sys.modules;"
            "import yolov5.models.yolo as y; assert y._yolo_backbones_patched;"
            "assert 'models.yolo' not in sys.modules, 'a second YOLOv5 copy was imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)


@pytest.mark.slow
def test_detector_learns_with_yolov5_loss() -> None:
    """Backbone + neck + Detect train end to end: YOLOv5's own loss falls when fitting two fixed images."""
    from yolov5.utils.loss import ComputeLoss

    torch.manual_seed(0)
    cfg = load_cfg()
    cfg["nc"] = 2
    model = build(cfg).train()
    model.hyp = {"box": 0.05, "cls": 0.5, "cls_pw": 1.0, "obj": 1.0, "obj_pw": 1.0, "anchor_t": 4.0,
                 "fl_gamma": 0.0, "label_smoothing": 0.0}
    compute_loss = ComputeLoss(model)
    images = torch.rand(2, 3, 128, 128)
    # targets: (image index, class, cx, cy, w, h) normalised
    targets = torch.tensor([[0, 0, 0.5, 0.5, 0.4, 0.3], [1, 1, 0.3, 0.6, 0.2, 0.5], [1, 0, 0.7, 0.3, 0.3, 0.2]])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(40):
        loss, _ = compute_loss(model(images), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    backbone_grads = [p.grad for p in model.model[0].parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in backbone_grads)
    assert losses[-1] < 0.5 * losses[0], f"loss did not fall: {losses[0]:.3f} -> {losses[-1]:.3f}"


def test_pretrained_norm_statistics_survive_the_stride_probe(tmp_path: Path) -> None:
    """Building a detector runs a training-mode probe; a YAML-loaded checkpoint's BN statistics must stay intact."""
    torch.manual_seed(0)
    source = yolo_backbones.create("edgevit_xxs", num_classes=1000)
    for name, buffer in source.named_buffers():
        if name.endswith("running_mean"):
            buffer.uniform_(-1, 1)
        elif name.endswith("running_var"):
            buffer.uniform_(0.5, 2)
    path = tmp_path / "edgevit_xxs.pth"
    torch.save(source.state_dict(), path)
    model = build(_cfg_with([[-1, 1, "EdgeViT", ["xxs", [1, 2, 3], str(path)]]]))
    backbone = model.model[0]
    from yolo_backbones.hosts.yolov5.parse_model import _NORM_SNAPSHOTS

    assert backbone not in _NORM_SNAPSHOTS, "the snapshot is dropped once used"
    expected = source.state_dict()
    for name, value in backbone.state_dict().items():
        torch.testing.assert_close(value, expected[name], msg=name)


def test_checkpoint_yaml_with_a_renamed_variant_gives_a_clear_error() -> None:
    """Resuming rebuilds the model from the checkpoint's YAML; a variant name this version lacks must say so."""
    cfg = load_cfg()
    cfg["backbone"][0] = [-1, 1, "EdgeViT", ["xxs_v0", [1, 2, 3]]]
    with pytest.raises(ModelConfigError,
                       match=r"layer 0 .*unknown EdgeViT variant 'xxs_v0'; known variants: xxs, xs, s"):
        build(cfg)


def test_yolov5_clone_detection_ignores_a_yaml_only_models_folder(tmp_path, monkeypatch):
    """A folder named ``models`` holding only YAMLs (like this project's) is not a YOLOv5 clone: clone
    checkpoints must then be read through the pip package's ``yolov5.models``; a real clone is used as is."""
    from yolo_backbones.hosts.yolov5.checkpoints import _clone_on_path as _yolov5_clone_on_path

    monkeypatch.delitem(sys.modules, "models", raising=False)
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "yolov5s.yaml").write_text("nc: 80\n")
    monkeypatch.setattr(sys, "path", [str(tmp_path)])  # only this folder: the pip package puts its root on sys.path
    assert _yolov5_clone_on_path() is False
    (tmp_path / "models" / "yolo.py").write_text("")
    assert _yolov5_clone_on_path() is True


def test_fused_plugin_detect_head_decodes_in_place_with_the_stock_values() -> None:
    """A fused plugin model's Detect writes the decoded boxes straight into its output: the stock head's values
    (bitwise for one image; with a batch the sigmoid writes strided rows, rounding may differ in the last bit),
    at any size, also after pickling; stock models keep the stock head."""
    import pickle

    from yolo_backbones.hosts.yolov5.model_patch import _FAST_DETECT

    torch.manual_seed(0)
    model = build(load_cfg("yolov5_mobileformer_52m.yaml")).eval()
    model.fuse()
    head = model.model[-1]
    assert getattr(head, _FAST_DETECT) is True
    with torch.no_grad():
        for shape in ((1, 3, 96, 128), (2, 3, 64, 64)):
            x = torch.rand(*shape)
            fast = model(x)
            setattr(head, _FAST_DETECT, False)
            stock = model(x)
            setattr(head, _FAST_DETECT, True)
            if shape[0] == 1:
                assert torch.equal(fast[0], stock[0])
            torch.testing.assert_close(fast[0], stock[0], rtol=1e-6, atol=1e-6)
            assert all(torch.equal(a, b) and a.is_contiguous() for a, b in zip(fast[1], stock[1]))
        again = pickle.loads(pickle.dumps(model))
        assert torch.equal(again(x)[0], fast[0])
    stock_model = build(yaml.safe_load((Path(yolo.__file__).parent / "yolov5n.yaml").read_text())).eval()
    stock_model.fuse()
    assert not getattr(stock_model.model[-1], _FAST_DETECT, False)
