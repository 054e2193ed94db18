"""Deployment: one host-free module per target format (conversion, loading, parity).

Each host only routes its own flags (YOLOv5's ``export.py --include``, ``yolo export format=``) and loaders
(``DetectMultiBackend``, ``AutoBackend``) to these modules.
"""
