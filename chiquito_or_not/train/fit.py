"""How a learner is fitted, whatever the task: SGDR cycles, precision, memory layout, seeds and determinism,
the processes training together, TensorBoard, checkpoints and the portable export."""

from __future__ import annotations

import warnings
from pathlib import Path

import cloudpickle
import numpy as np
from fastai.callback.schedule import ParamScheduler, SchedCos
from fastai.torch_core import set_seed

from ..core.errors import DAMAGED_FILE, RecipeError, RunError
from ..core.layout import RunFolder
from . import portable

__all__ = [
    "sgdr_schedule",
    "fit_sgdr",
    "export_learner",
    "tensorboard_available",
    "tensorboard_cb",
    "apply_precision",
    "channels_last",
    "world_and_rank",
    "accelerate_available",
    "fit_ctx",
    "reseed",
    "environment",
    "apply_deterministic",
    "load_checkpoint",
]


def sgdr_schedule(lr_max, lens: list[int]):
    """lr at training position pos in [0, 1]: a cosine from lr_max to 0 in each cycle, cycles of `lens` epochs."""
    bounds = np.cumsum([0, *lens]) / sum(lens)
    cos = SchedCos(lr_max, 0)

    def sched(pos):
        i = min(int(np.searchsorted(bounds, pos, side="right")) - 1, len(lens) - 1)
        return cos((pos - bounds[i]) / (bounds[i + 1] - bounds[i]))

    return sched


def fit_sgdr(learn, n_cycles: int, cycle_len: int, lr_max, cycle_mult: int = 1, cbs=None) -> None:
    """SGDR: restart the learning rate each cycle; cycles grow by cycle_mult. fastai's own fit_sgdr
    divides by cycle_mult - 1, so it cannot restart every epoch (cycle_mult = 1)."""
    lens = [cycle_len * cycle_mult**i for i in range(n_cycles)]
    lr_max = np.array(lr_max) if np.ndim(lr_max) else lr_max
    learn.fit(sum(lens), cbs=[ParamScheduler({"lr": sgdr_schedule(lr_max, lens)}), *(cbs or [])])


def export_learner(learn, path: Path) -> Path:
    """fastai export with our splitter embedded by value: the file loads without chiquito_or_not."""
    cloudpickle.register_pickle_by_value(portable)
    try:
        learn.export(path.resolve())
    finally:
        cloudpickle.unregister_pickle_by_value(portable)
    return path


def tensorboard_available() -> None:
    try:
        import fastai.callback.tensorboard  # noqa: F401
        import torch.utils.tensorboard  # noqa: F401
    except ImportError:
        raise RecipeError(
            "'finetune.tensorboard' needs the tensorboard package: pip install 'chiquito-or-not[tensorboard]'"
        ) from None


def tensorboard_cb(run: Path, stage: str | None, dls=None):
    """fastai's TensorBoard callback for one stage (its own folder), or, with `dls`, a batch of inputs."""
    tensorboard_available()
    from fastai.callback.tensorboard import TensorBoardCallback
    from torch.utils.tensorboard import SummaryWriter

    if dls is None:
        return TensorBoardCallback(log_dir=RunFolder(run).tensorboard / stage, trace_model=False, log_preds=False)
    x = dls.train.decode((dls.train.one_batch()[0],))[0][:16].float()
    with SummaryWriter(RunFolder(run).tensorboard / "inputs") as w:
        w.add_images("train inputs (augmented)", x / 255 if x.max() > 1 else x, 0)


def apply_precision(learn, precision: str) -> str:
    """Apply the recipe's precision: "auto" is mixed fp16 on a CUDA GPU and fp32 on a CPU."""
    import torch

    mode = precision if precision != "auto" else ("fp16" if torch.cuda.is_available() else "fp32")
    if mode == "fp16":
        learn.to_fp16()
    elif mode == "bf16":
        learn.to_bf16()
    return mode


def channels_last(model, on: bool) -> None:
    """Train convolutions in channels-last memory layout when the task asks for it (detection): a faster
    training step on a CPU (bench/bench_channels_last.py). Same weights; the arithmetic differs by more than
    float rounding in the backward pass (see the classify task). The model goes back to the default layout
    before it is saved or exported."""
    import torch

    model.to(memory_format=torch.channels_last if on else torch.contiguous_format)


def world_and_rank() -> tuple[int, int]:
    """(world size, rank) under `accelerate launch` / torchrun, else (1, 0)."""
    from fastai.torch_core import num_distrib, rank_distrib

    return max(num_distrib(), 1), rank_distrib()


def accelerate_available() -> None:
    try:
        import accelerate  # noqa: F401
    except ImportError:
        raise RecipeError(
            "training in several processes (torchrun, accelerate launch) needs accelerate: "
            "pip install 'chiquito-or-not[distributed]'"
        ) from None


def fit_ctx(learn, world: int):
    """DistributedDataParallel through fastai and accelerate (NCCL on GPUs, gloo on CPUs) when several
    processes train, else nothing."""
    from contextlib import nullcontext

    if world <= 1:
        return nullcontext()
    from .distributed import ddp_ctx

    return ddp_ctx(learn)


def reseed(seed: int, *dls) -> None:
    """Seed python, numpy and torch, and the shuffling of each DataLoaders' own generator: each step of a
    run (LR finder, every stage) starts from its own seed, so what ran before it (a cold feature cache
    computing vectors, a resumed run skipping stages) cannot change what it draws."""
    import random

    set_seed(seed, reproducible=True)
    for d in dls:
        for dl in d.loaders:
            dl.rng = random.Random(seed)


def environment(recipe) -> dict:
    """What a run's numbers depend on beyond the recipe and data: library versions, threads, device."""
    import platform

    import fastai
    import timm
    import torch
    import torchvision

    device = f"cuda ({torch.cuda.get_device_name()})" if torch.cuda.is_available() else "cpu"
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "fastai": fastai.__version__,
        "timm": timm.__version__,
        "numpy": np.__version__,
        "threads": torch.get_num_threads(),
        "device": device,
        "machine": platform.machine(),
        "deterministic": recipe.finetune.deterministic,
    }


def apply_deterministic(recipe) -> None:
    """finetune.deterministic: PyTorch's deterministic kernels (an error names any op that has none)."""
    import os

    import torch

    if recipe.finetune.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS needs it for repeatable GEMMs
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False


def load_checkpoint(learn, folder: Path, stage: str) -> None:
    """Load a finished stage's weights and optimizer state (tensors only: weights_only, never a pickle)."""
    import pickle

    path = RunFolder(folder.parent).checkpoint(stage)
    fix = (
        f"run without --resume to start over (the previous finished run in "
        f"{folder.parent.name.removesuffix('.partial')} is kept until the new one succeeds)"
    )
    if not path.is_file():
        raise RunError(f"{path} is missing, but state.json says stage '{stage}' finished; {fix}")
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("error", message="Could not load the optimizer state")
            learn.load(f"stage-{stage}", with_opt=True, weights_only=True)
    except (*DAMAGED_FILE, UserWarning, pickle.UnpicklingError) as e:
        raise RunError(
            f"{path} is damaged or belongs to another model ({type(e).__name__}: "
            f"{str(e).splitlines()[0][:100] if str(e) else 'unreadable'}); {fix}"
        ) from None
