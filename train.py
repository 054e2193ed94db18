#!/usr/bin/env python
"""YOLOv5's train.py with the yolo-backbones plugin installed; takes exactly YOLOv5's train.py flags.

Example: python train.py --help   (add --yolov5-dir CLONE to run a YOLOv5 clone's train.py instead of the PyPI package's)
"""
import sys

from yolo_backbones.cli import run_yolov5_script

if __name__ == "__main__":
    sys.exit(run_yolov5_script("train", sys.argv[1:]))
