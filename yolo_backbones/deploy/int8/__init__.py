"""INT8 post-training quantization: OpenVINO (NNCF) and LiteRT (ai-edge-quantizer), their calibration images,
FP32 exceptions and accuracy measures (docs/int8.md)."""
