#!/usr/bin/env python
"""YOLOv5's val.py with the yolo-backbones plugin installed; takes exactly YOLOv5's val.py flags.

Example: python val.py --help   (add --yolov5-dir CLONE to run a YOLOv5 clone's val.py instead of the PyPI package's)
"""
import sys

from yolo_backbones.cli import run_yolov5_script

if __name__ == "__main__":
    sys.exit(run_yolov5_script("val", sys.argv[1:]))
