"""The finetune stage: LR finder, three training stages with checkpoints, export, evaluation."""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import cloudpickle
import numpy as np
from fastai.callback.schedule import ParamScheduler, SchedCos
from fastai.torch_core import set_seed

from . import portable
from .backbones import BACKBONES
from .dataset import write_csv
from .errors import RecipeError, RunError
from .features import head_learner
from .files import atomic_write_text
from .learner import BodyBatchNormEval, LogProgress, class_weights, keep_frozen, make_dls, make_learner
from .lr_find import find_lr
from .paths import cache_dir, dataset_dir, run_dir
from .plots import plot_history
from .recipe import Recipe, recipe_to_dict, write_resolved

__all__ = ["STAGES", "finetune", "fit_sgdr", "sgdr_schedule", "export_learner", "FinetuneResult"]

STAGES = ("frozen", "augmented", "unfrozen")
HISTORY_COLUMNS = ["stage", "epoch", "train_loss", "valid_loss", "accuracy"]


@dataclass
class FinetuneResult:
    run: Path
    learn: object
    timings: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    lr: dict = field(default_factory=dict)


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
    lens = [cycle_len * cycle_mult ** i for i in range(n_cycles)]
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


def _tensorboard(run: Path, stage: str | None, dls=None):
    """fastai's TensorBoard callback for one stage (its own folder), or, with `dls`, a batch of inputs."""
    try:
        from fastai.callback.tensorboard import TensorBoardCallback
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise RecipeError("'finetune.tensorboard' needs the tensorboard package: "
                          "pip install 'chiquito-or-not[tensorboard]'") from None
    if dls is None:
        return TensorBoardCallback(log_dir=run / "tensorboard" / stage, trace_model=False, log_preds=False)
    x = dls.train.decode((dls.train.one_batch()[0],))[0][:16].float()
    with SummaryWriter(run / "tensorboard" / "inputs") as w:
        w.add_images("train inputs (augmented)", x / 255 if x.max() > 1 else x, 0)


def _precision(learn, precision: str) -> str:
    """Apply the recipe's precision: "auto" is mixed fp16 on a CUDA GPU and fp32 on a CPU."""
    import torch

    mode = precision if precision != "auto" else ("fp16" if torch.cuda.is_available() else "fp32")
    if mode == "fp16":
        learn.to_fp16()
    elif mode == "bf16":
        learn.to_bf16()
    return mode


def _distributed() -> tuple[int, int]:
    """(world size, rank) under `accelerate launch` / torchrun, else (1, 0)."""
    from fastai.torch_core import num_distrib, rank_distrib

    return max(num_distrib(), 1), rank_distrib()


def _fit_ctx(learn, world: int):
    """fastai's DistributedDataParallel context (through accelerate) when several processes train."""
    from contextlib import nullcontext

    if world <= 1:
        return nullcontext()
    try:
        import fastai.distributed  # noqa: F401  (adds Learner.distrib_ctx)
        import accelerate  # noqa: F401
    except ImportError:
        raise RecipeError("training on several GPUs needs accelerate: pip install 'chiquito-or-not[distributed]'") \
            from None
    return learn.distrib_ctx(sync_bn=False)


def _fingerprint(recipe: Recipe) -> str:
    d = recipe_to_dict(recipe)
    d.pop("path", None)
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def _read_history(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _stage_epochs(recipe: Recipe, stage: str) -> int:
    f = recipe.finetune
    if stage == "frozen":
        return f.frozen.epochs
    s = f.augmented if stage == "augmented" else f.unfrozen
    return sum(s.cycle_len * s.cycle_mult ** i for i in range(s.cycles))


def finetune(recipe: Recipe, resume: bool = False, log=print, data_root: Path | None = None) -> FinetuneResult:
    """Train the recipe's model in three stages into its run folder, export model.pkl, evaluate it."""
    import torch

    from .evaluate import evaluate

    run = run_dir(recipe.name)
    root = Path(data_root) if data_root else dataset_dir(recipe.name)
    if recipe.finetune.precision in ("fp16", "bf16") and not torch.cuda.is_available():
        raise RecipeError(f"{recipe.path}: finetune.precision = \"{recipe.finetune.precision}\" needs a CUDA GPU; "
                          "use \"auto\" (fp32 on a CPU) or \"fp32\"")
    world, rank = _distributed()
    if world > 1 and not torch.cuda.is_available():
        raise RunError(f"{world} processes were launched, but fastai's distributed training needs CUDA GPUs "
                       "(its DistributedDL broadcasts through .cuda()); run `chiquito finetune` without "
                       "accelerate/torchrun on a CPU")
    if rank:  # under `accelerate launch` only the first process writes files and prints
        log = lambda *_: None  # noqa: E731
    state_path, ckpt = run / "state.json", run / "checkpoints"
    state = {"fingerprint": _fingerprint(recipe), "done": [], "timings": {}, "dataset": str(root.resolve())}
    if resume:
        if not state_path.is_file():
            raise RunError(f"{run}: nothing to resume (no state.json); run without --resume")
        saved = json.loads(state_path.read_text())
        if saved.get("fingerprint") != state["fingerprint"]:
            raise RunError(f"{run}: the recipe changed since this run started; run without --resume "
                           "to start over")
        state = saved
    elif not rank:
        for p in (state_path, run / "history.csv", run / "lr_find.json", run / "model.pkl"):
            p.unlink(missing_ok=True)
        shutil.rmtree(ckpt, ignore_errors=True)
    if not rank:
        write_resolved(recipe, run)

    set_seed(recipe.seed, reproducible=True)
    t0 = time.time()
    dls_plain = make_dls(recipe, augment=False, root=root)
    dls_aug = make_dls(recipe, augment=True, root=root)
    learn = make_learner(recipe, dls_plain, run, class_weights(recipe, root))
    precision = _precision(learn, recipe.finetune.precision)
    if recipe.finetune.tensorboard and not rank:
        _tensorboard(run, None, dls_aug)
    log(f"  data: {len(dls_plain.train_ds)} train / {len(dls_plain.valid_ds)} valid images, "
        f"classes {', '.join(dls_plain.vocab)}; backbone {recipe.finetune.backbone} at {recipe.finetune.size}px, "
        f"{precision} on {dls_plain.device}" + (f", {world} processes" if world > 1 else ""))

    f = recipe.finetune
    # the frozen stage (and the LR finder, which is about it) can train the head on cached body features
    cached = f.frozen.feature_cache and BACKBONES[f.backbone].family != "scratch" and "frozen" not in state["done"]
    if cached and world > 1:
        log("  feature cache off: several processes train (each would compute every image)")
        cached = False
    hl = None
    if cached:
        t = time.time()
        hl = head_learner(learn, f.backbone, cache_dir() / "features", log=log)
        if precision != "fp32":
            _precision(hl, precision)
        state["timings"]["features"] = round(time.time() - t, 1)
    lr_info = {}
    if (f.lr_find or "auto" in (f.frozen.lr, f.augmented.lr)):
        if resume and (run / "lr_find.json").is_file():
            lr_info = json.loads((run / "lr_find.json").read_text())
        else:  # several processes run it together: fastai gathers every loss across them, so they agree
            t = time.time()
            with _fit_ctx(learn, world):
                lr_info = find_lr(hl or learn, run, num_it=f.lr_find_iters, write=not rank)
            state["timings"]["lr_find"] = round(time.time() - t, 1)
            sug = ", ".join(f"{k} {v:.1e}" for k, v in lr_info["suggestions"].items()) or "none"
            log(f"  lr_find: {lr_info['points']} points; suggestions: {sug}; "
                f"chosen {lr_info['chosen']:.1e} ({lr_info['chosen_by']})")

    def lr_of(value):
        return lr_info["chosen"] if value == "auto" else value

    # a body trained from scratch has nothing worth freezing: its "frozen" stages train everything
    freeze = learn.freeze if BACKBONES[f.backbone].family != "scratch" else learn.unfreeze
    if state["done"]:
        learn.load(f"stage-{state['done'][-1]}", with_opt=True)
        log(f"  resumed after stage '{state['done'][-1]}' from {ckpt}")
    history = _read_history(run / "history.csv")
    for i, stage in enumerate(STAGES, 1):
        n_ep = _stage_epochs(recipe, stage)
        if stage in state["done"] or n_ep == 0:
            continue
        t = time.time()
        cbs = [LogProgress(stage)] + ([_tensorboard(run, stage)] if f.tensorboard else [])
        body_cbs = cbs + ([BodyBatchNormEval()] if f.batchnorm == "frozen" else [])  # for `learn`, not the head
        recorder = learn.recorder
        if stage == "frozen":
            log(f"stage {i}/3 frozen: {n_ep} epochs, one cycle at lr {lr_of(f.frozen.lr):.1e}"
                + (", head on cached body features" if hl else ""))
            learn.dls = dls_plain
            freeze()
            if hl:
                hl.fit_one_cycle(n_ep, lr_of(f.frozen.lr), cbs=cbs)
                recorder = hl.recorder
            else:
                with _fit_ctx(learn, world):
                    learn.fit_one_cycle(n_ep, lr_of(f.frozen.lr), cbs=body_cbs)
        elif stage == "augmented":
            s = f.augmented
            log(f"stage {i}/3 augmented: {s.cycles} SGDR cycles of {s.cycle_len} epoch(s) x{s.cycle_mult}, "
                f"lr {lr_of(s.lr):.1e}")
            learn.dls = dls_aug
            freeze()
            with _fit_ctx(learn, world):
                fit_sgdr(learn, s.cycles, s.cycle_len, lr_of(s.lr), s.cycle_mult, cbs=body_cbs)
        else:
            s = f.unfrozen
            log(f"stage {i}/3 unfrozen: {s.cycles} SGDR cycles ({n_ep} epochs), lrs per layer group "
                + ", ".join(f"{x:.0e}" for x in s.lrs))
            learn.dls = dls_aug
            log(f"  {keep_frozen(learn, s.keep_frozen)}")
            with _fit_ctx(learn, world):
                fit_sgdr(learn, s.cycles, s.cycle_len, list(s.lrs), s.cycle_mult, cbs=body_cbs)
        history += [dict(zip(HISTORY_COLUMNS, [stage, len(history) + k + 1, *map(float, v)]))
                    for k, v in enumerate(recorder.values)]
        state["done"].append(stage)
        state["timings"][stage] = round(time.time() - t, 1)
        if not rank:
            write_csv(run / "history.csv", history, HISTORY_COLUMNS)
            learn.save(f"stage-{stage}", with_opt=True)
            atomic_write_text(state_path, json.dumps(state, indent=1) + "\n")  # the stage is now finished

    learn.dls = dls_plain
    if precision != "fp32":
        learn.to_fp32()  # the exported model is plain fp32: it loads and predicts on any CPU
    if rank:
        return FinetuneResult(run=run, learn=learn, timings=state["timings"], lr=lr_info)
    if history:
        plot_history(history, run / "loss_curve.png")
    export_learner(learn, run / "model.pkl")
    state["timings"]["train_total"] = round(time.time() - t0, 1)
    atomic_write_text(state_path, json.dumps(state, indent=1) + "\n")
    metrics = evaluate(run, log=log)
    return FinetuneResult(run=run, learn=learn, timings=state["timings"], metrics=metrics, lr=lr_info)
