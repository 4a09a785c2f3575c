"""Trained models put to use: prediction on pictures and videos (PyTorch or ONNX), ONNX export,
and image embeddings for the leak check."""
