"""Inference machinery, kept apart from the reference math of the backbones.

* :mod:`.fuse` — exact re-parameterisations ("fusing": BN folds, layer scales, identities, input normalisation);
* :mod:`.eval_fusion` — an eval-mode backbone runs a fused copy of itself when nothing can tell;
* :mod:`.context` — the one switch that lets blocks take their fused forms (a fused backbone's eager inference);
* :mod:`.onednn` — conv / linear layers with their activation or residual add on fused oneDNN kernels;
* :mod:`.tiling` — row strips so that wide intermediate maps stay in the CPU cache;
* :mod:`.runtime` — opt-in process settings (the glibc allocator).

It imports nothing else of the core. The fused forms of the blocks live beside their reference code, in each
package's ``fused.py`` (:mod:`yolo_backbones.core.layers.fused` for the shared blocks).
"""
