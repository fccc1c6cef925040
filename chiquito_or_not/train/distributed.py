"""Several processes training one model (`torchrun` / `accelerate launch`): fastai's DistributedDataParallel
callback through accelerate, on CUDA GPUs (NCCL) and on CPU processes too (gloo).

fastai's own `DistributedDL` broadcasts the shuffled indices through `.cuda()` (NCCL takes only CUDA
tensors), so on a CPU it cannot run; `GlooDL` broadcasts them where the process group's backend wants
them. Everything else (DDP through accelerate, gathering predictions and metrics across processes) is
fastai's and accelerate's."""

from __future__ import annotations

import os
from contextlib import contextmanager

import torch
from fastai.distributed import DistributedDL, DistributedTrainer
from fastai.torch_core import rank_distrib

__all__ = ["ddp_ctx", "first_process_decides", "finish"]


class GlooDL(DistributedDL):
    """fastai's DistributedDL, with the index broadcast on the device the backend takes (CPU for gloo)."""

    def _broadcast(self, t, rank):
        on_cuda = torch.distributed.get_backend() == "nccl"
        t = torch.tensor(t, dtype=torch.long, device="cuda" if on_cuda else "cpu")
        torch.distributed.broadcast(t, rank)
        return t.cpu().tolist()


class AnyDeviceTrainer(DistributedTrainer):
    """fastai's DistributedTrainer wrapping the loaders in GlooDL; on a CPU accelerate is told so, which
    makes it start gloo (its MULTI_CPU mode) instead of looking for GPUs."""

    def _wrap_dl(self, dl):
        return dl if isinstance(dl, DistributedDL) else GlooDL(dl, device=self.learn.model.device)

    def after_loss(self):
        """The recorded loss is the mean over the processes (the gradient stays each one's own, which DDP
        averages): the LR finder's stop on divergence and its choice then agree in every process, where
        each one's own batches would stop one finder a step before the other and leave it waiting forever."""
        loss = self.learn.loss.detach().clone()
        torch.distributed.all_reduce(loss)
        self.learn.loss = loss / torch.distributed.get_world_size()


@contextmanager
def ddp_ctx(learn):
    """The learner trains as one of the launched processes for the duration (sync BatchNorm off: the
    body's BatchNorm is frozen or per process, as fastai's default for fine-tuning)."""
    from fastai.callback.progress import ProgressCallback

    cb = AnyDeviceTrainer(sync_bn=False, cpu=not torch.cuda.is_available())
    learn.add_cb(cb)
    if rank_distrib():
        learn.remove_cb(ProgressCallback)
    try:
        yield learn
    finally:
        learn.remove_cb(cb)


def first_process_decides(decide, rank: int):
    """`decide()` run by the first process alone, before the processes join up, and its answer in every
    process (the LR finder: run by one process on all the training batches, it chooses the rate a
    single-process run chooses; run by all, fastai's finder restores its weights from a file the first
    process deletes while the others may still look for it, and each would choose from its own losses)."""
    from accelerate import PartialState

    if torch.distributed.is_initialized():
        raise RuntimeError("first_process_decides must run before the process group starts")
    answer = None
    if rank == 0:  # fastai reads WORLD_SIZE at each step to decide whether to gather across processes
        world = os.environ["WORLD_SIZE"]
        os.environ["WORLD_SIZE"] = "1"
        try:
            answer = decide()
        finally:
            os.environ["WORLD_SIZE"] = world
    PartialState(cpu=not torch.cuda.is_available())  # joins the processes: gloo on CPUs, NCCL on GPUs
    box = [answer]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def finish() -> None:
    """Close the process group once this process has trained (no warning at exit). No barrier: the first
    process goes on to export and evaluate alone, and a peer waiting for it would hang if that failed."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
