"""ExecuTorch export (XNNPACK delegate) and inference with the ExecuTorch runtime, host-free.

* export: :func:`export_executorch` captures the model with ``torch.export`` at the example's shape (static),
  lowers every supported operator to XNNPACK (``XnnpackPartitioner``) after spelling LayerNorm, attention,
  splits, 1x1 pooling and cell-wise transposed convolutions with operators XNNPACK takes (:mod:`.xnnpack_graph`)
  and writes the ``.pte`` program, beside ``<stem>.yaml`` when given metadata. Operators XNNPACK does not take run
  on ExecuTorch's portable CPU kernels.
* inference: :class:`ExecuTorchRunner` loads the program with ``executorch.runtime``; precision float32
  (XNNPACK's fp32 kernels; nothing is quantised or cast).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .graph import capture_rewrites, export_ready
from .metadata import read_yaml_metadata, write_yaml_metadata
from .requirements import import_edge
from .xnnpack_graph import DECOMPOSITIONS, layout_copies_as_conversions, pool_1x1_as_average

__all__ = ["PRECISION", "export_executorch", "ExecuTorchRunner", "load_executorch", "portable_operators"]

PRECISION = "fp32"


def export_executorch(model: nn.Module, example: torch.Tensor, file: str | Path,
                      metadata: dict[str, Any] | None = None) -> Path:
    """Convert ``model`` to an ExecuTorch ``.pte`` program for inputs of ``example``'s shape; returns its path.

    Args:
        model: a (fused) model taking ``(B, C, H, W)`` float input; outputs in order (lists/tuples flattened).
        example: input of the exported shape.
        file: the ``.pte`` path to write; ``<stem>.yaml`` goes beside it.
        metadata: ``stride``/``names``, or None.
    """
    import_edge("executorch", "ExecuTorch export")
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    file = Path(file)
    file.parent.mkdir(parents=True, exist_ok=True)
    with export_ready(model, example) as ready, capture_rewrites("executorch", ready):
        program = torch.export.export(ready, (example,), strict=False)
    program = pool_1x1_as_average(program.run_decompositions(DECOMPOSITIONS))  # ops XNNPACK takes, same outputs
    program = layout_copies_as_conversions(program)
    lowered = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])
    file.write_bytes(lowered.to_executorch().buffer)
    if metadata:
        write_yaml_metadata(file.with_suffix(".yaml"), metadata)
    return file


def portable_operators(file: str | Path) -> dict[str, int]:
    """Operators of a ``.pte`` program that run outside the XNNPACK delegate, on ExecuTorch's portable kernels:
    ``{"aten::native_layer_norm.out": 3, ...}`` (``{}`` when XNNPACK runs everything). Convolutions and matrix
    products here would mean the heavy work is not on XNNPACK."""
    import_edge("executorch", "ExecuTorch inspection")
    from executorch.exir._serialize import _deserialize_pte_binary

    program = _deserialize_pte_binary(Path(file).read_bytes())
    program = getattr(program, "program", program)
    plan = program.execution_plan[0]
    counts: dict[str, int] = {}
    for instruction in plan.chains[0].instructions:
        call = instruction.instr_args
        if type(call).__name__ == "KernelCall":
            op = plan.operators[call.op_index]
            name = f"{op.name}.{op.overload}" if op.overload else op.name
            counts[name] = counts.get(name, 0) + 1
    return counts


class ExecuTorchRunner:
    """A ``.pte`` program on the ExecuTorch runtime: ``runner(x)`` takes a float32 array of the exported input
    shape and returns the outputs as a list of arrays."""

    def __init__(self, file: str | Path, threads: int | None = None) -> None:
        import_edge("executorch", "ExecuTorch inference")
        from executorch.runtime import Runtime

        if threads:  # the runtime's one (process-wide) thread pool, which XNNPACK runs on; only when asked for
            from executorch.extension.pybindings import portable_lib

            portable_lib._unsafe_reset_threadpool(int(threads))

        self.file = Path(file)
        if self.file.is_dir():
            found = sorted(self.file.glob("*.pte"))
            if not found:
                raise FileNotFoundError(f"{self.file} holds no .pte program")
            self.file = found[0]
        if not self.file.is_file():
            raise FileNotFoundError(f"ExecuTorch program {self.file} not found")
        self.method = Runtime.get().load_program(str(self.file)).load_method("forward")
        own = self.file.with_suffix(".yaml")  # written by export_executorch; ultralytics writes metadata.yaml
        self.metadata = read_yaml_metadata(own if own.is_file() else self.file.parent / "metadata.yaml")

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        outputs = self.method.execute([torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))])
        return [o.numpy().copy() if isinstance(o, torch.Tensor) else np.asarray(o) for o in outputs]


def load_executorch(file: str | Path, threads: int | None = None) -> ExecuTorchRunner:
    """:class:`ExecuTorchRunner` for a ``.pte`` file (or a folder holding one); ``threads`` resizes the runtime's
    thread pool (process-wide; None leaves it at the runtime's default, one thread per core)."""
    return ExecuTorchRunner(file, threads)
