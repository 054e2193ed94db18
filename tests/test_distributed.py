"""Two-process DistributedDataParallel training steps on CPU (gloo) with one YOLOv5 model per backbone family.

Each rank builds the model from the same seed, checks ``SyncBatchNorm`` conversion, wraps the model in DDP
with ``find_unused_parameters=False`` and ``static_graph=False`` (so a parameter that gets no gradient makes
DDP raise at the next forward), feeds its own batch through YOLOv5's ``ComputeLoss`` and backward, and
compares gradients and parameters across ranks.

``SyncBatchNorm`` only synchronises CUDA/XPU/HPU/PrivateUse1 tensors: on CPU its training forward raises
``ValueError: SyncBatchNorm expected input tensor to be on GPU ...`` once a process group exists. On CPU the
conversion itself is checked (types, state dict, eval outputs) and the DDP steps run on the unconverted model;
if the running torch accepts CPU input, the DDP steps run on the converted model instead.
"""
from __future__ import annotations

import copy
import datetime
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import yaml

pytestmark = pytest.mark.slow  # end-to-end: subprocesses, training, exports

yolo = pytest.importorskip("yolov5.models.yolo")

if not dist.is_available() or not dist.is_gloo_available():
    pytest.skip("torch.distributed with the gloo backend is not available", allow_module_level=True)

ROOT = Path(__file__).resolve().parents[1]
WORLD = 2
IMG = 128
YAMLS = ["yolov5_edgevit.yaml", "yolov5_mobileformer_52m.yaml", "yolov5_efficientformerv2_s0.yaml",
         "yolov5_efficientformer.yaml"]
HYP = {"box": 0.05, "cls": 0.5, "cls_pw": 1.0, "obj": 1.0, "obj_pw": 1.0, "anchor_t": 4.0, "fl_gamma": 0.0,
       "label_smoothing": 0.0}
# (image index in the batch, class, x, y, w, h): the same labels on every rank, different images.
TARGETS = torch.tensor([[0, 0, 0.5, 0.5, 0.4, 0.3], [1, 3, 0.3, 0.6, 0.2, 0.5], [1, 7, 0.7, 0.3, 0.3, 0.3]])


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _same_on_all_ranks(tensor: torch.Tensor) -> bool:
    gathered = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, tensor.contiguous())
    return all(torch.equal(gathered[0], t) for t in gathered[1:])


def _flat(tensors) -> torch.Tensor:
    return torch.cat([t.detach().reshape(-1).float() for t in tensors])


def _cpu_sync_bn_supported() -> bool:
    """Whether SyncBatchNorm's training forward accepts CPU tensors here (collective: call on every rank)."""
    bn = torch.nn.SyncBatchNorm(2).train()
    try:
        bn(torch.rand(2, 2, 3, 3))
    except ValueError as e:
        assert "expected input tensor to be on GPU" in str(e), e
        return False
    return True


def _check_sync_bn_conversion(model: torch.nn.Module) -> torch.nn.Module:
    """Convert to SyncBatchNorm; every norm (including SafeBatchNorm2d) converted, state and eval outputs kept."""
    norms = [n for n, m in model.named_modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert norms, "no BatchNorm layers found"
    synced = torch.nn.SyncBatchNorm.convert_sync_batchnorm(copy.deepcopy(model))
    modules = dict(synced.named_modules())
    not_converted = [n for n in norms if type(modules[n]) is not torch.nn.SyncBatchNorm]
    assert not not_converted, f"not converted to SyncBatchNorm: {not_converted[:5]}"
    before, after = model.state_dict(), synced.state_dict()
    assert list(before) == list(after), "convert_sync_batchnorm changed the state-dict keys"
    assert all(torch.equal(before[k], after[k]) for k in before)
    x = torch.rand(1, 3, IMG, IMG, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(synced.eval()(x)[0], copy.deepcopy(model).eval()(x)[0])
    return synced.train()


def _ddp_steps(name: str, rank: int, sync_bn: bool) -> None:
    from torch.nn.parallel import DistributedDataParallel as DDP
    from yolov5.utils.loss import ComputeLoss

    torch.manual_seed(0)
    model = yolo.Model(yaml.safe_load((ROOT / "models" / name).read_text()))
    model.hyp = HYP
    assert _same_on_all_ranks(_flat(model.state_dict().values())), f"{name}: seeded builds differ across ranks"

    synced = _check_sync_bn_conversion(model)
    if sync_bn:
        model = synced
    ddp = DDP(model.train(), find_unused_parameters=False, static_graph=False)
    compute_loss = ComputeLoss(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    params = dict(model.named_parameters())

    for step in range(2):  # an unused parameter makes DDP raise at the second forward
        images = torch.rand(2, 3, IMG, IMG, generator=torch.Generator().manual_seed(100 * step + rank))
        assert not _same_on_all_ranks(images), "each rank must see its own batch"
        optimizer.zero_grad(set_to_none=True)
        loss, _ = compute_loss(ddp(images), TARGETS)
        loss.backward()
        missing = [n for n, p in params.items() if p.grad is None]
        assert not missing, f"{name}: parameters without gradient (DDP would fail): {missing[:10]}"
        grads = _flat(p.grad for p in params.values())
        assert torch.isfinite(grads).all(), f"{name}: non-finite gradients"
        assert _same_on_all_ranks(grads), f"{name}: gradients differ across ranks after DDP's allreduce"
        optimizer.step()
    # Parameters stay in step; BatchNorm running statistics are per rank unless synchronised (DDP broadcasts
    # rank 0's buffers at the start of every forward, so they differ only after the last one).
    assert _same_on_all_ranks(_flat(params.values())), f"{name}: parameters diverged across ranks"


def _worker(rank: int, port: int, names: list[str]) -> None:
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD, timeout=datetime.timedelta(seconds=300))
    try:
        import yolo_backbones  # noqa: F401  (registers the backbones with YOLOv5 in the spawned process)

        sync_bn = _cpu_sync_bn_supported()
        for name in names:
            _ddp_steps(name, rank, sync_bn)
    finally:
        dist.destroy_process_group()


def test_two_process_ddp_step_for_each_backbone_family() -> None:
    mp.spawn(_worker, args=(_free_port(), YAMLS), nprocs=WORLD, join=True)
