"""The torch side of the engine: ONNX models rebuilt as trainable modules (onnx2torch),
pruned (torch-pruning) and trained (distillation, fine-tuning), then exported back to ONNX.

Every module here imports torch lazily, so importing the package costs nothing.
"""
