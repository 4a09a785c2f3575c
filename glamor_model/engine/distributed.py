"""Multi-GPU and multi-node runs started by `torchrun`: one process per device, the same code
on one process or many.

Work that touches shared files (caches, the run directory) is done by rank 0 first, then
by the first process of each other node (where the cache folder is not shared), then by
the rest, which find it done. Those phases coordinate over a CPU (gloo) group with a long
timeout, since rank 0 may spend hours building a video corpus while the others wait, and
an error in any rank is raised in every rank instead of leaving the others at a barrier.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Callable, TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")
PREPARE_TIMEOUT = timedelta(hours=24)  # how long ranks wait for rank 0's preprocessing


class RankFailed(RuntimeError):
    """Another rank failed; its message says why."""


@dataclass
class Distributed:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    group: Any = field(default=None, repr=False)  # the CPU group for coordination

    @property
    def main(self) -> bool:
        return self.rank == 0

    def _gather_errors(self, error: BaseException | None) -> None:
        """Raise in every rank if any rank failed (the failing rank raises its own exception)."""
        if self.world == 1:
            if error is not None:
                raise error
            return
        messages: list = [None] * self.world
        dist.all_gather_object(messages, None if error is None else f"{type(error).__name__}: {error}",
                               group=self.group)
        if error is not None:
            raise error
        failed = [(r, m) for r, m in enumerate(messages) if m is not None]
        if failed:
            rank, message = failed[0]
            raise RankFailed(f"rank {rank} failed: {message}")

    def agree(self, fn: Callable[[], T], on: bool = True) -> T | None:
        """fn() where `on`, then every rank learns whether it failed anywhere."""
        result, error = None, None
        if on:
            try:
                result = fn()
            except Exception as e:  # noqa: BLE001 - re-raised below, in every rank
                error = e
        self._gather_errors(error)
        return result

    def in_rank_order(self, fn: Callable[[], T]) -> T:
        """fn() on rank 0, then on each other node's first process, then on the rest."""
        result = None
        for phase in (self.main, self.local_rank == 0 and not self.main, self.local_rank != 0):
            done = self.agree(fn, on=phase)
            result = done if phase else result
        return result

    def same_everywhere(self, value, what: str) -> None:
        """Raise in every rank unless `value` is the same in all (e.g. the data each node prepared)."""
        if self.world == 1:
            return
        values: list = [None] * self.world
        dist.all_gather_object(values, value, group=self.group)
        differ = [r for r, v in enumerate(values) if v != values[0]]
        if differ:
            raise RankFailed(f"{what} differs between rank 0 and rank(s) {', '.join(map(str, differ))}: every "
                             "node must see the same data (or build its cache from the same corpus)")

    def from_main(self, fn: Callable[[], T]) -> T:
        """fn() on rank 0, its result sent to every rank (no rank needs to see rank 0's files)."""
        result = self.agree(fn, on=self.main)
        if self.world == 1:
            return result
        box = [result]
        dist.broadcast_object_list(box, src=0, group=self.group)
        return box[0]


def setup_distributed(device: torch.device) -> Distributed:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Distributed()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    group = dist.new_group(backend="gloo", timeout=PREPARE_TIMEOUT)
    return Distributed(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")), group)
