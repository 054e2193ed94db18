"""One adapter per YOLO host (``yolov5``, ``ultralytics``) and what they share (``common``); the core never imports
these."""
