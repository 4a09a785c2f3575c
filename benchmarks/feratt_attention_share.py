"""Does FERAtt's attention move onto the face? The share of the gate's mass inside the face box, for the
reference model (head, loss, AMSGrad) trained on a fresh composite per draw.

Generated faces (tests/learnability.make_face_build, 3 classes) are pasted on other clips' backgrounds at
`--size` px with the face 0.35-0.5 of the width; every `--every` steps the share, the accuracy and the
predicted-class histogram are measured on 2 fixed composites of each test face. A uniform map gives the
boxes' mean area, printed first.

    python benchmarks/feratt_attention_share.py --size 48 --lr 1e-4 --seconds 1500 --batch 8

One JSON line per measurement on stdout (docs/feratt.md has a run's table).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from glamor_model.data.composites import CompositeSource  # noqa: E402
from glamor_model.models import create_model  # noqa: E402
from glamor_model.models.feratt import attention_in_box  # noqa: E402
from learnability import make_face_build  # noqa: E402
from ncaer.dataset.manifest import read_manifest  # noqa: E402
from ncaer.synth.composite import SynthConfig, backgrounds_by_split, render  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=48)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--seconds", type=float, default=600, help="training time")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--every", type=int, default=20, help="steps between measurements")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        faces_build = make_face_build(Path(tmp) / "faces", {"train": 30, "test": 10})
        synth = SynthConfig(faces=str(faces_build), out="", size=args.size, face_min=0.35, face_max=0.5)
        faces = read_manifest(faces_build)
        faces = faces[faces["has_face"]]
        backgrounds = backgrounds_by_split(synth, faces)

        def source(split: str) -> CompositeSource:
            rows = faces[faces["split"] == split]
            return CompositeSource(rows.to_dict("records"), rows["label_id"].to_numpy(np.int64), synth,
                                   backgrounds[split], args.size, False)

        train, test = source("train"), source("test")
        images, boxes, labels = [], [], []
        for k in range(2):
            for i, row in enumerate(test.rows):
                composite, _, box, _ = render(row, synth, test.backgrounds, np.random.default_rng([99, k, i]))
                images.append(cv2.cvtColor(composite, cv2.COLOR_BGR2RGB))
                boxes.append(box)
                labels.append(row["label_id"])
        x_test = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255
        boxes, labels = np.array(boxes), np.array(labels)
        area = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).mean() / args.size**2
        print(json.dumps({**vars(args), "box_area_share": round(float(area), 4)}), flush=True)

        torch.manual_seed(args.seed)
        model = create_model("feratt", num_classes=3)
        optimizer = torch.optim.Adam(model.parameters(), lr=args.lr, amsgrad=True)
        start = time.time()

        def measure(step: int) -> None:
            model.eval()
            with torch.no_grad():
                out = model(x_test)
            model.train()
            pred = out["logits"].argmax(1).numpy()
            print(json.dumps({"step": step, "s": round(time.time() - start, 1),
                              "share": round(attention_in_box(out["attention"], boxes).mean().item(), 4),
                              "accuracy": round(float((pred == labels).mean()), 3),
                              "predicted": np.bincount(pred, minlength=3).tolist()}), flush=True)

        measure(0)
        step, epoch, order = 0, 0, []
        while time.time() - start < args.seconds:
            if not order:
                epoch += 1
                order = list(np.random.default_rng([args.seed, epoch]).permutation(len(train)))
            idx, order = order[:args.batch], order[args.batch:]
            pairs = [train.draw(int(i), args.seed, epoch) for i in idx]
            x, target = (torch.from_numpy(np.stack(a)).permute(0, 3, 1, 2).float() / 255 for a in zip(*pairs))
            terms = model.loss_terms(model(x, target), target, torch.from_numpy(train.labels[idx]))
            optimizer.zero_grad()
            terms["loss"].backward()
            optimizer.step()
            step += 1
            if step % args.every == 0:
                print(json.dumps({"step": step, **{k: round(v.item(), 4) for k, v in terms.items()}}), flush=True)
                measure(step)
        measure(step)


if __name__ == "__main__":
    main()
