"""Data parallel training under torchrun, kept out of the recipe's way.

With one process (plain ``python -m services.tuning.train``) every method here is the identity or
a no-op, so ``train.main`` reads as the single-process loop. Under ``torchrun --nproc_per_node N``
each process takes its share of every micro-batch, DistributedDataParallel averages the gradients
(once per optimizer step), each process's loss is weighted by its share of the tokens so that N
processes train like one, and only the lead process (rank 0) writes.
"""

from __future__ import annotations

import os
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Processes:
    world: int  # how many processes train together
    rank: int  # this one's place among them
    device: str

    @classmethod
    def start(cls, device: str) -> Processes:
        """This process alone, or its place among those torchrun started (joining their group)."""
        world, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
        if world > 1:
            dist.init_process_group("nccl" if device == "cuda" else "gloo")
            if device == "cuda":
                device = f"cuda:{int(os.environ['LOCAL_RANK'])}"
                torch.cuda.set_device(device)
        return cls(world, rank, device)

    @property
    def lead(self) -> bool:
        """The one process that writes the log, the checkpoints and the adapter."""
        return self.rank == 0

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        return torch.nn.parallel.DistributedDataParallel(model) if self.world > 1 else model

    def first_block(self, micro_batches_done: int, micro_batch: int) -> int:
        """Where this process's share of the next micro-batch starts: every process together take
        world * micro_batch blocks per micro-batch."""
        return (micro_batches_done * self.world + self.rank) * micro_batch

    def accumulating(self, forward: torch.nn.Module, last: bool) -> AbstractContextManager:
        """Gradients are all-reduced once per optimizer step, on its last micro-batch."""
        return forward.no_sync() if self.world > 1 and not last else nullcontext()

    def weigh(self, loss: torch.Tensor, labeled: int) -> torch.Tensor:
        """This process's mean loss, weighted so that the gradients DDP averages equal those of the
        mean over every process's tokens together: one process's run of the same global micro-batch."""
        if self.world == 1:
            return loss
        ours = torch.tensor(float(labeled), dtype=torch.float64, device=loss.device)
        total = ours.clone()
        dist.all_reduce(total)
        return loss * (ours * self.world / total).to(torch.float32)

    def mean(self, value: float) -> float:
        if self.world == 1:
            return value
        tensor = torch.tensor([value], device=self.device, dtype=torch.float64)
        dist.all_reduce(tensor)
        return tensor.item() / self.world

    def close(self) -> None:
        if self.world > 1:
            dist.destroy_process_group()
