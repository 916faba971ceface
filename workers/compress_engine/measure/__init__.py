"""Measurements of ONNX models: size, parameters, latency, fidelity, and the inputs they use."""
