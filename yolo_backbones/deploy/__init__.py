"""Host-free deployment: conversion of fused models to the runtimes users deploy on, and INT8 quantization.

Hosts (YOLOv5's ``export.py``, ultralytics' exporter) only route their flags here.
"""
