#!/usr/bin/env python
"""YOLOv5's detect.py with the yolo-backbones plugin installed; takes exactly YOLOv5's detect.py flags.

Example: python detect.py --help   (add --yolov5-dir CLONE to run a YOLOv5 clone's detect.py instead of the PyPI package's)
"""
import sys

from yolo_backbones.cli import run_yolov5_script

if __name__ == "__main__":
    sys.exit(run_yolov5_script("detect", sys.argv[1:]))
