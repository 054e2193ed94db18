#!/usr/bin/env python
"""YOLOv5's export.py with the yolo-backbones plugin installed; takes exactly YOLOv5's export.py flags.
For an ultralytics model (YOLOv8/YOLO11/YOLO26 YAML or checkpoint) the common flags are translated and
key=value settings pass through to ultralytics; --host yolov5|ultralytics overrides the choice.

Example: python export.py --help
(add --yolov5-dir CLONE to run a YOLOv5 clone's export.py instead of the PyPI package's)
"""
import sys

from yolo_backbones.cli import run_script

if __name__ == "__main__":
    sys.exit(run_script("export", sys.argv[1:]))
