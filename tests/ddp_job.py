"""`ncaer train` with probes, run as a script by the distributed tests (under torchrun or alone).

Registers `probe-net`, a model with no BatchNorm and no dropout, so that two processes of
batch b train exactly as one process of batch 2b. Writes PROBE_OUT/probe-rank{R}.json (the
training indices each epoch, how many cache folders this rank published, its dropout seed
per epoch) and PROBE_OUT/weights-rank{R}.pt (the model's weights at the end). Rank 0
publishes slowly, so a rank that does not wait for it would publish too.
With PROBE_FORBID_CHECKPOINT set, a rank other than 0 that reads last.pt fails, as one that
cannot see rank 0's run directory would. With PROBE_RANK1_DATA set, rank 1 reads that dataset
instead of --data, as a node whose copy of the data differs would.
"""

import json
import os
import sys
import time
from pathlib import Path

import torch
from torch import nn

import glamor_model.data.stores as stores
import glamor_model.engine.loop as loop
from glamor_model.data.batches import EpochBatches
from glamor_model.models import register_model
from ncaer.cli import main


class ProbeNet(nn.Module):
    def __init__(self, num_classes: int = 7):
        super().__init__()
        self.face = nn.Conv2d(3, 4, 5, stride=4)
        self.context = nn.Conv2d(3, 4, 5, stride=4)
        self.fc = nn.Linear(8, num_classes)

    def forward(self, face, context):
        pooled = [self.face(face).relu().mean((2, 3)), self.context(context).relu().mean((2, 3))]
        return self.fc(torch.cat(pooled, 1))


register_model("probe-net", "test model: two convolutions and a linear layer")(ProbeNet)

rank = int(os.environ.get("RANK", "0"))
out = Path(os.environ["PROBE_OUT"])
probe = {"seen": {}, "published": 0, "seeds": []}
models = []

raw_epoch = EpochBatches.raw_epoch


def recording_raw_epoch(self, epoch=0):
    for batch in raw_epoch(self, epoch):
        if self.train:
            probe["seen"].setdefault(str(epoch), []).extend(int(i) for i in batch[3])
        yield batch


publish = stores.publish


def counting_publish(tmp, folder):
    probe["published"] += 1
    if rank == 0 and "WORLD_SIZE" in os.environ:
        time.sleep(1)  # a slow rank 0: another rank that did not wait would make the cache itself
    publish(tmp, folder)


create_model = loop.create_model


def keeping_create_model(*args, **kwargs):
    models.append(create_model(*args, **kwargs))
    return models[-1]


seed_epoch = loop._seed_epoch


def recording_seed_epoch(seed, epoch, rank_):
    seed_epoch(seed, epoch, rank_)
    probe["seeds"].append(torch.initial_seed())


def forbidden_load(path):
    raise AssertionError(f"rank {rank} read {path}")


EpochBatches.raw_epoch = recording_raw_epoch
stores.publish = counting_publish
loop.create_model = keeping_create_model
loop._seed_epoch = recording_seed_epoch
if os.environ.get("PROBE_FORBID_CHECKPOINT") and rank != 0:
    loop._load_checkpoint = forbidden_load

args = sys.argv[1:]
if os.environ.get("PROBE_RANK1_DATA") and rank == 1:
    args[args.index("--data") + 1] = os.environ["PROBE_RANK1_DATA"]

try:
    main(args, standalone_mode=False)
finally:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"probe-rank{rank}.json").write_text(json.dumps(probe))
    if models:
        torch.save(models[0].state_dict(), out / f"weights-rank{rank}.pt")
