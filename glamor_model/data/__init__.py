"""Data for the models: datasets of any layout, preprocessing as the reference code does it,
array stores cached on disk, and seeded batches augmented on the training device.

`preprocess` needs no torch (ONNX inference uses it).
"""
