"""Export a trained frame model to ONNX, and check onnxruntime reproduces PyTorch."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from glamor_model.engine.checkpoint import load_run
from glamor_model.models import model_family

from .predict import METADATA_KEY


class _Exported(nn.Module):
    """What the ONNX graph computes: class probabilities and, where the model has it, the context attention."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, face, context):
        out = self.model.forward_all(face, context)
        probs = torch.softmax(out["logits"].float(), dim=1)
        return (probs, out["attention"]) if "attention" in out else (probs,)


def export_onnx(run: str | Path, path: str | Path, checkpoint: str = "best", tolerance: float = 1e-4) -> dict:
    """Write `path` (dynamic batch) with the run's classes and preprocessing in its metadata.

    Returns {"path", "outputs", "max_abs_diff"}; raises ValueError for a face-image or clip model, and
    RuntimeError if onnxruntime differs from PyTorch by more than `tolerance` on a random batch of a size
    the export never saw.
    """
    import onnx
    import onnxruntime as ort

    model, ckpt = load_run(run, checkpoint, "cpu")
    family = model_family(ckpt["model_name"])
    if family != "frame":  # the graph's inputs and `predict --onnx` are a frame model's: face and context
        raise ValueError(f"{ckpt['model_name']} is a {family} model; `ncaer export` exports frame models only. "
                         f"Run it with PyTorch: `ncaer predict --run {run}`")
    prep = ckpt["prep"]
    wrapper = _Exported(model).eval()
    face = torch.rand(2, 3, prep["face_size"], prep["face_size"])
    context = torch.rand(2, 3, prep["crop"], prep["crop"])
    with torch.no_grad():
        n_out = len(wrapper(face, context))
    outputs = ["probs", "attention"][:n_out]
    batch = torch.export.Dim("batch")
    program = torch.onnx.export(wrapper, (face, context), input_names=["face", "context"], output_names=outputs,
                                dynamic_shapes={"face": {0: batch}, "context": {0: batch}}, dynamo=True,
                                verbose=False)
    proto = program.model_proto
    meta = {"classes": ckpt["classes"], "prep": prep, "normalize": ckpt["normalize"], "model": ckpt["model_name"],
            "epoch": ckpt["epoch"], "outputs": outputs}
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(meta)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, str(path))

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    f = rng.random((5, 3, prep["face_size"], prep["face_size"]), dtype=np.float32)
    c = rng.random((5, 3, prep["crop"], prep["crop"]), dtype=np.float32)
    got = session.run(None, {"face": f, "context": c})
    with torch.no_grad():
        want = wrapper(torch.from_numpy(f), torch.from_numpy(c))
    diff = max(float(np.abs(g - w.numpy()).max()) for g, w in zip(got, want))
    if diff > tolerance:
        raise RuntimeError(f"onnxruntime differs from PyTorch by {diff:.2e} (> {tolerance:g}); {path} is not usable")
    return {"path": str(path), "outputs": outputs, "max_abs_diff": diff, "model": ckpt["model_name"]}

