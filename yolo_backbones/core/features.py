"""timm's feature contract: ``feature_info``, ``forward_intermediates``, ``prune_intermediate_layers``.

A backbone is built whole (every stage, the final norm, the head) and loads its checkpoint that way; a feature
extractor (``features_only=True``, what a YOLO backbone row builds) is then pruned to the stages it returns, so
it has no parameter without a gradient (DDP without ``find_unused_parameters``). What was pruned is read off the
model's structure (:meth:`FeatureContract.pruned_modules`): loading a checkpoint later skips those keys, for
models pickled by any version.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Union

import torch
from torch import nn

__all__ = ["FeatureInfo", "FeatureContract", "feature_take_indices"]

Indices = Union[int, Sequence[int], None]


def feature_take_indices(num_stages: int, indices: Indices = None) -> tuple[list[int], int]:
    """timm's rule for picking stages: ``None`` -> all, an int ``n`` -> the last ``n``, a sequence -> those (negative
    ones count from the end). Returns the absolute indices and the largest; raises ``ValueError`` when out of range."""
    if indices is None:
        indices = num_stages
    if isinstance(indices, int):
        if not 0 < indices <= num_stages:
            raise ValueError(f"last-n stages: n={indices} is out of range 1..{num_stages}")
        take = list(range(num_stages - indices, num_stages))
    else:
        take = [num_stages + i if i < 0 else int(i) for i in indices]
        if not take or any(not 0 <= i < num_stages for i in take):
            raise ValueError(f"stage indices {list(indices)} are out of range 0..{num_stages - 1}")
    return take, max(take)


class FeatureInfo:
    """Channels, reduction (stride) and module name of every stage output, and the stages a model returns.

    The interface of timm's ``FeatureInfo``: ``channels()``, ``reduction()``, ``module_name()`` give the values at
    ``out_indices`` (or at the stage indices passed), ``info[i]`` / ``self[i]`` the dict of stage ``i``
    (``num_chs``, ``reduction``, ``module``, ``index``).
    """

    def __init__(self, info: list[dict[str, Any]], out_indices: Sequence[int]) -> None:
        self.info = [dict(d, index=i) for i, d in enumerate(info)]
        self.out_indices = tuple(out_indices)

    def get(self, key: str, idx: int | Sequence[int] | None = None) -> Any:
        """``key`` of the stages ``idx`` (an index, a list, or ``None`` for ``out_indices``)."""
        if idx is None:
            return [self.info[i][key] for i in self.out_indices]
        if isinstance(idx, int):
            return self.info[idx][key]
        return [self.info[i][key] for i in idx]

    def get_dicts(self, keys: Sequence[str] | None = None, idx: int | Sequence[int] | None = None) -> Any:
        """The info dicts (restricted to ``keys``) of the stages ``idx`` (``None``: ``out_indices``)."""
        pick = (lambda d: d) if keys is None else (lambda d: {k: d[k] for k in keys})
        if isinstance(idx, int):
            return pick(self.info[idx])
        return [pick(self.info[i]) for i in (self.out_indices if idx is None else idx)]

    def channels(self, idx: int | Sequence[int] | None = None) -> Any:
        """Channels of the stages ``idx`` (``None``: ``out_indices``)."""
        return self.get("num_chs", idx)

    def reduction(self, idx: int | Sequence[int] | None = None) -> Any:
        """Stride of the stages ``idx`` (``None``: ``out_indices``)."""
        return self.get("reduction", idx)

    def module_name(self, idx: int | Sequence[int] | None = None) -> Any:
        """Name of the module computing each stage ``idx`` (``None``: ``out_indices``)."""
        return self.get("module", idx)

    def __getitem__(self, item: int) -> dict[str, Any]:
        return self.info[item]

    def __len__(self) -> int:
        return len(self.info)

    def __repr__(self) -> str:
        return f"FeatureInfo(out_indices={list(self.out_indices)}, info={self.info})"


class FeatureContract:
    """The stage structure of a :class:`~yolo_backbones.core.base.Backbone` and timm's feature API over it (a mixin).

    A backbone family declares which modules compute each stage (:meth:`stage_module_names`), its final norm
    (``final_norm_name``, applied to the stride-32 output) and its head (``head_module_names``), and implements
    :meth:`forward_stages`. Everything else here is generic.
    """

    stage_strides: ClassVar[tuple[int, ...]] = (4, 8, 16, 32)
    # The stages a feature extractor returns unless told otherwise: P3-P5, what a YOLO neck reads.
    default_out_indices: ClassVar[tuple[int, ...]] = (1, 2, 3)
    final_norm_name: ClassVar[str | None] = "norm"
    head_module_names: ClassVar[tuple[str, ...]] = ("head",)

    # ------------------------------------------------------------------------------- the model's mode
    def init_features(self, features_only: bool, out_indices: Sequence[int] | int | None) -> None:
        """Record the mode (called by ``Backbone.__init__``, after ``num_classes``)."""
        self._features_only = bool(features_only)
        if not features_only and out_indices is not None:
            raise ValueError(f"{type(self).__name__}: out_indices select the stage maps of a feature extractor; pass "
                             "features_only=True as well (num_classes=0 alone gives pooled features, as in timm)")
        self.out_indices = (self._check_out_indices(self.default_out_indices if out_indices is None else out_indices)
                            if features_only else tuple(range(len(self.stage_strides))))
        # Set by the subclass once the stages are known.
        self.stage_channels: tuple[int, ...] = ()

    @property
    def features_only(self) -> bool:
        """True for a feature extractor: ``forward`` returns the ``out_indices`` stage maps (no head)."""
        mode = self.__dict__.get("_features_only")
        # Models pickled by 0.2 and earlier store no mode: num_classes 0 was their feature extractor.
        return self.num_classes == 0 if mode is None else mode

    def _check_out_indices(self, out_indices: Sequence[int] | int) -> tuple[int, ...]:
        if isinstance(out_indices, int):
            out_indices = [out_indices]
        indices = tuple(int(i) for i in out_indices)
        n = len(self.stage_strides)
        if not indices or any(i < 0 or i >= n for i in indices) or list(indices) != sorted(set(indices)):
            raise ValueError(
                f"{type(self).__name__} out_indices {list(out_indices)} are invalid: give increasing stage "
                f"indices in 0..{n - 1} (strides {'/'.join(map(str, self.stage_strides))}), e.g. [1, 2, 3] for P3-P5")
        return indices

    # ---------------------------------------------------------------------------------------- metadata
    def stage_module_names(self, stage: int) -> tuple[str, ...]:
        """Dotted names of the modules that compute stage ``stage`` (after the previous stage), in order."""
        raise NotImplementedError

    @property
    def feature_info(self) -> FeatureInfo:
        """``num_chs``, ``reduction`` and ``module`` of every stage output; ``out_indices`` are the returned ones."""
        info = [dict(num_chs=c, reduction=s, module=self.stage_module_names(i)[-1])
                for i, (c, s) in enumerate(zip(self.stage_channels, self.stage_strides))]
        return FeatureInfo(info, self.out_indices)

    @property
    def out_channels(self) -> list[int]:
        """Channels of each returned feature map, in ``out_indices`` order."""
        return [self.stage_channels[i] for i in self.out_indices]

    @property
    def out_strides(self) -> list[int]:
        """Stride of each returned feature map, in ``out_indices`` order."""
        return [self.stage_strides[i] for i in self.out_indices]

    @property
    def num_built_stages(self) -> int:
        """How many stages (from stage 0) the model has; fewer than 4 after pruning."""
        n = len(self.stage_strides)
        while n and not self._has(self.stage_module_names(n - 1)[-1]):
            n -= 1
        return n

    def pruned_modules(self) -> list[str]:
        """Modules of the whole model (stages, final norm, head) this one does not have: pruned, or in 0.2 not built."""
        names = [name for i in range(len(self.stage_strides)) for name in self.stage_module_names(i)]
        names += [self.final_norm_name] if self.final_norm_name else []
        return [name for name in names + list(self.head_module_names) if not self._has(name)]

    def _has(self, name: str) -> bool:
        try:
            self.get_submodule(name)
        except AttributeError:
            return False
        return True

    # ----------------------------------------------------------------------------------------- forward
    def forward_stages(self, x: torch.Tensor, last_stage: int) -> list[torch.Tensor]:
        """Run stages ``0..last_stage`` on a prepared input; return their raw ``(B, C_i, H_i, W_i)`` outputs."""
        raise NotImplementedError

    def final_norm(self, x: torch.Tensor) -> torch.Tensor:
        """The final norm of the stride-32 output ``(B, C_3, h, w)`` (identity for a family without one)."""
        return x if self.final_norm_name is None else self.get_submodule(self.final_norm_name)(x)

    def forward_intermediates(self, x: torch.Tensor, indices: Indices = None, norm: bool = False,
                              stop_early: bool = False, output_fmt: str = "NCHW", intermediates_only: bool = False
                              ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """The stage outputs ``indices`` (timm's rule: ``None`` all, ``n`` the last ``n``, or a list) of ``x``.

        Args:
            x: ``(B, in_chans, H, W)``, the model's input (see ``input_norm``).
            indices: the stages to return (of the stages the model has).
            norm: pass the stride-32 output through the final norm (a feature extractor's ``forward`` does).
            stop_early: run only up to the last stage in ``indices``.
            output_fmt: ``"NCHW"`` (maps; the only format).
            intermediates_only: return just the list.

        Returns:
            ``[(B, C_i, H_i, W_i) for i in indices]``, or ``(final, that list)`` where ``final`` is the last built
            stage's output (after the final norm once stage 3 ran), what :meth:`forward_features` returns.
        """
        if output_fmt != "NCHW":
            raise ValueError(f"output_fmt {output_fmt!r}: only 'NCHW' maps are returned")
        self.check_input(x)
        take, last = feature_take_indices(self.num_built_stages, indices)
        with self.kernels():
            return self.intermediates(self.prepare_input(x), take, norm, last if stop_early or intermediates_only
                                      else self.num_built_stages - 1, intermediates_only)

    def intermediates(self, x: torch.Tensor, take: Sequence[int], norm: bool, run_to: int, only: bool
                      ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """:meth:`forward_intermediates` on a prepared input: stages ``0..run_to``, the ``take`` ones returned."""
        stages = self.forward_stages(x, run_to)
        top = len(self.stage_strides) - 1
        normed = self.final_norm(stages[top]) if run_to == top and (norm or not only) else None
        picked = [normed if norm and i == top else stages[i] for i in take]
        return picked if only else ((stages[-1] if normed is None else normed), picked)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last stage's output after the final norm, ``(B, C_3, h, w)`` (what the classifier head reads)."""
        return self.forward_intermediates(x, indices=[-1])[0]

    # ------------------------------------------------------------------------------------------ pruning
    def prune_intermediate_layers(self, indices: Indices = 1, prune_norm: bool = False, prune_head: bool = True
                                  ) -> list[int]:
        """Remove what computing the stages ``indices`` does not need; returns their absolute indices.

        Stages after the last one in ``indices`` go, and with them the final norm (it normalises the stride-32
        output only); ``prune_norm`` removes it in any case, ``prune_head`` removes the head. With the head gone
        the model is a feature extractor returning ``indices`` (``features_only``), as timm's feature wrappers use
        it. Returns the indices, which stay valid (stage numbering does not change).
        """
        take, last = feature_take_indices(self.num_built_stages, indices)
        doomed = [name for i in range(len(self.stage_strides) - 1, last, -1) for name in self.stage_module_names(i)]
        if self.final_norm_name and (prune_norm or last < len(self.stage_strides) - 1):
            doomed.append(self.final_norm_name)
        if prune_head:
            doomed += list(self.head_module_names)
        for name in sorted((n for n in doomed if self._has(n)), key=_removal_order):
            _remove(self, name)
        if prune_head:
            self.num_classes = 0
            self._features_only = True
            self.out_indices = tuple(take)
        return take


def _removal_order(name: str) -> tuple:
    # Later items of a container first, so the indices of the remaining ones do not shift.
    parent, _, last = name.rpartition(".")
    return (parent, -int(last) if last.isdigit() else 0)


def _remove(root: nn.Module, name: str) -> None:
    """Delete the submodule ``name`` (``a.b.3``: the last item of a container, or an attribute)."""
    parent_name, _, last = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    if last.isdigit() and isinstance(parent, (nn.Sequential, nn.ModuleList)):
        if int(last) != len(parent) - 1:
            raise ValueError(f"cannot prune {name}: later items of {parent_name} would shift")
        del parent[int(last)]
    else:
        delattr(parent, last)
