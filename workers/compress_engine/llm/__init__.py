"""Language models: onnxruntime-genai folders, their text data, quantization and measurement."""
