"""GLAMOR-Net and its baselines in PyTorch, trained and evaluated on `ncaer build` outputs.

models (registry and architectures) -> data (datasets, stores, batches) -> engine
(the training loop) -> eval (figures, ablation) -> serve (predict, export, embed).
`pooling` and `data.preprocess` need no torch, so ONNX inference works without it.
"""
