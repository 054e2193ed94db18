#!/usr/bin/env bash
# Create ./.venv and install everything: torch 2.14.1 / torchvision 0.29.1, YOLOv5 7.0.14 (PyPI),
# pycocotools, onnx, onnxruntime, openvino + nncf (INT8), pytest, the edge extra (litert-torch, ai-edge-litert, coremltools,
# pnnx, ncnn, executorch, MNN) and this project (editable, with its YOLOv5 import hook).
# Usage: bash install.sh            (PYTHON=python3.11 bash install.sh to pick the interpreter)
set -euo pipefail
cd "$(dirname "$0")"
PYTHON="${PYTHON:-python3}"
"$PYTHON" -m venv .venv
PIP=".venv/bin/python -m pip"
$PIP install --quiet --upgrade "pip>=23" "setuptools<81" wheel
# torch first and pinned: a bare "torch" requirement could resolve to another (multi-GB) build.
$PIP install --quiet torch==2.14.1 torchvision==0.29.1
# The edge extra (LiteRT, Core ML, NCNN, ExecuTorch, MNN; ~1.2 GB with jax and executorch) and the openvino extra (NNCF,
# OpenVINO INT8) are installed too, under a constraint that keeps the torch pin: no package of them may replace torch.
printf 'torch==2.14.1\ntorchvision==0.29.1\n' > .venv/constraints.txt
$PIP install --quiet -c .venv/constraints.txt -e ".[test,edge,openvino]"
.venv/bin/python -c "import yolo_backbones, yolov5, torch; print('yolo-backbones', yolo_backbones.__version__, '| yolov5', yolov5.__version__, '| torch', torch.__version__)"
