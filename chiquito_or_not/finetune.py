"""The finetune stage: LR finder, three training stages with checkpoints, export, evaluation."""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import cloudpickle
import numpy as np
from fastai.callback.schedule import ParamScheduler, SchedCos
from fastai.torch_core import set_seed

from . import portable
from .backbones import get_backbone
from .errors import RecipeError, RunError
from .features import head_learner
from .files import atomic_write_text, write_csv
from .learner import BodyBatchNormEval, LogProgress, class_weights, keep_frozen, make_dls, make_learner
from .lr_find import find_lr
from .paths import cache_dir, dataset_dir, partial_run_dir, run_dir
from .plots import plot_history
from .recipe import Recipe, recipe_to_dict, write_resolved

__all__ = ["STAGES", "finetune", "lr_find_only", "fit_sgdr", "sgdr_schedule", "export_learner", "FinetuneResult"]

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


def _tensorboard_available() -> None:
    try:
        import fastai.callback.tensorboard  # noqa: F401
        import torch.utils.tensorboard  # noqa: F401
    except ImportError:
        raise RecipeError("'finetune.tensorboard' needs the tensorboard package: "
                          "pip install 'chiquito-or-not[tensorboard]'") from None


def _tensorboard(run: Path, stage: str | None, dls=None):
    """fastai's TensorBoard callback for one stage (its own folder), or, with `dls`, a batch of inputs."""
    _tensorboard_available()
    from fastai.callback.tensorboard import TensorBoardCallback
    from torch.utils.tensorboard import SummaryWriter

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


def _learner(recipe: Recipe, root: Path, run: Path):
    """(learn, dls_plain, dls_aug), seeded: the one way finetune, lr-find and sanity build a learner.
    Raises DataError when `chiquito dataset` has not run, WeightsError for missing or bad weights."""
    set_seed(recipe.seed, reproducible=True)
    dls_plain = make_dls(recipe, augment=False, root=root)
    dls_aug = make_dls(recipe, augment=True, root=root)
    return make_learner(recipe, dls_plain, run, class_weights(recipe, root)), dls_plain, dls_aug


def _cached_head(learn, recipe: Recipe, precision: str, world: int, log):
    """The head learner on cached body features (frozen stage and LR finder), or None when off."""
    f = recipe.finetune
    if not f.frozen.feature_cache or get_backbone(f.backbone).family == "scratch":
        return None
    if world > 1:
        log("  feature cache off: several processes train (each would compute every image)")
        return None
    hl = head_learner(learn, f.backbone, cache_dir() / "features", log=log)
    if precision != "fp32":
        _precision(hl, precision)
    return hl


def lr_find_only(recipe: Recipe, log=print, data_root: Path | None = None) -> dict:
    """The LR finder exactly as `finetune` runs it (same seed, data, class weights, feature cache and
    precision), so the rate it prints is the one `finetune` would choose; writes runs/NAME/lr_find.*."""
    root = Path(data_root) if data_root else dataset_dir(recipe.name)
    out = run_dir(recipe.name)
    learn, _, _ = _learner(recipe, root, out)
    hl = _cached_head(learn, recipe, _precision(learn, recipe.finetune.precision), 1, log)
    return find_lr(hl or learn, out, num_it=recipe.finetune.lr_find_iters)


def finetune(recipe: Recipe, resume: bool = False, log=print, data_root: Path | None = None) -> FinetuneResult:
    """Train the recipe's model in three stages into its run folder, export model.pkl, evaluate it."""
    import torch

    from .evaluate import evaluate

    final, run = run_dir(recipe.name), partial_run_dir(recipe.name)  # built in `run`, promoted on success
    root = Path(data_root) if data_root else dataset_dir(recipe.name)
    # everything that can be checked is checked before anything is written: a failed run changes nothing
    if recipe.finetune.precision in ("fp16", "bf16") and not torch.cuda.is_available():
        raise RecipeError(f"{recipe.path}: finetune.precision = \"{recipe.finetune.precision}\" needs a CUDA GPU; "
                          "use \"auto\" (fp32 on a CPU) or \"fp32\"")
    world, rank = _distributed()
    if world > 1 and not torch.cuda.is_available():
        raise RunError(f"{world} processes were launched, but fastai's distributed training needs CUDA GPUs "
                       "(its DistributedDL broadcasts through .cuda()); run `chiquito finetune` without "
                       "accelerate/torchrun on a CPU")
    if recipe.finetune.tensorboard:
        _tensorboard_available()
    if rank:  # under `accelerate launch` only the first process writes files and prints
        log = lambda *_: None  # noqa: E731
    state_path, ckpt = run / "state.json", run / "checkpoints"
    state = {"fingerprint": _fingerprint(recipe), "done": [], "timings": {}, "dataset": str(root.resolve())}
    if resume:
        state = _resumable_state(run, final, state["fingerprint"])

    t0 = time.time()
    learn, dls_plain, dls_aug = _learner(recipe, root, run)
    if state["done"]:
        _load_checkpoint(learn, ckpt, state["done"][-1])
        log(f"  resumed after stage '{state['done'][-1]}' from {ckpt}")
    if not rank:
        if not resume:  # an interrupted earlier attempt is started over; the finished run in `final` stays
            shutil.rmtree(run, ignore_errors=True)
        write_resolved(recipe, run)
    precision = _precision(learn, recipe.finetune.precision)
    if recipe.finetune.tensorboard and not rank:
        _tensorboard(run, None, dls_aug)
    log(f"  data: {len(dls_plain.train_ds)} train / {len(dls_plain.valid_ds)} valid images, "
        f"classes {', '.join(dls_plain.vocab)}; backbone {recipe.finetune.backbone} at {recipe.finetune.size}px, "
        f"{precision} on {dls_plain.device}" + (f", {world} processes" if world > 1 else ""))

    f = recipe.finetune
    hl = None
    if "frozen" not in state["done"]:
        t = time.time()
        hl = _cached_head(learn, recipe, precision, world, log)
        if hl:
            state["timings"]["features"] = round(time.time() - t, 1)
    lr_info = {}
    if (f.lr_find or "auto" in (f.frozen.lr, f.augmented.lr)):
        if resume and (saved := _read_json(run / "lr_find.json")):
            lr_info = saved
        else:  # several processes run it together: fastai gathers every loss across them, so they agree
            t = time.time()
            with _fit_ctx(learn, world):
                lr_info = find_lr(hl or learn, run, num_it=f.lr_find_iters, write=not rank)
            state["timings"]["lr_find"] = round(time.time() - t, 1)
            sug = ", ".join(f"{k} {v:.1e}" for k, v in lr_info["suggestions"].items()) or "none"
            auto = [k for k, v in (("frozen", f.frozen.lr), ("augmented", f.augmented.lr)) if v == "auto"]
            use = (f"{', '.join(auto)} stage(s) use {lr_info['chosen']:.1e} ({lr_info['chosen_by']})" if auto else
                   f"not used: the recipe fixes lr (frozen {f.frozen.lr:.0e}, augmented {f.augmented.lr:.0e})")
            log(f"  lr_find: {lr_info['points']} points; suggestions: {sug}; {use}")

    def lr_of(value):
        return lr_info["chosen"] if value == "auto" else value

    # a body trained from scratch has nothing worth freezing: its "frozen" stages train everything
    freeze = learn.freeze if get_backbone(f.backbone).family != "scratch" else learn.unfreeze
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
    metrics = evaluate(run, log=log, notice=lambda _: None)  # our own file, written a moment ago
    metrics["model"] = str(final / "model.pkl")
    atomic_write_text(run / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    promote(run, final)
    learn.path = final
    return FinetuneResult(run=final, learn=learn, timings=state["timings"], metrics=metrics, lr=lr_info)


# written into runs/NAME/ by `compare` and `sweep`, not by finetune: a new run keeps them
KEPT_ACROSS_RUNS = ("leaderboard.csv", "leaderboard.png", "sweep.csv", "sweep.png")


def promote(work: Path, final: Path) -> None:
    """Replace the previous run folder by the finished one in two renames; until then the previous run,
    its model.pkl included, is untouched."""
    old = final.with_name(f".{final.name}.replaced")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        for name in KEPT_ACROSS_RUNS:
            if (final / name).is_file() and not (work / name).exists():
                shutil.copy2(final / name, work / name)
        final.rename(old)
    work.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def _read_json(path: Path) -> dict | None:
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return d if isinstance(d, dict) else None


def _resumable_state(work: Path, final: Path, fingerprint: str) -> dict:
    """The interrupted run's state.json, checked; a one-line RunError when there is none or it is damaged."""
    path = work / "state.json"
    if not path.exists():
        done = _read_json(final / "state.json")
        if done and (final / "model.pkl").is_file():
            raise RunError(f"{final} is a finished run and nothing was interrupted since; run without --resume "
                           "to train again")
        raise RunError(f"{work}: nothing to resume (no interrupted run); run without --resume")
    saved = _read_json(path)
    if (saved is None or not isinstance(saved.get("done"), list) or not set(saved["done"]) <= set(STAGES)
            or not isinstance(saved.get("timings"), dict) or not isinstance(saved.get("dataset"), str)):
        raise RunError(f"{path} is damaged (not the state a run writes); run without --resume to start over "
                       f"(the previous finished run in {final} is kept until the new one succeeds)")
    if saved.get("fingerprint") != fingerprint:
        raise RunError(f"{work}: the recipe changed since this run started; run without --resume to start over")
    return saved


def _load_checkpoint(learn, folder: Path, stage: str) -> None:
    """Load a finished stage's weights and optimizer state (tensors only: weights_only, never a pickle)."""
    import pickle
    import struct
    import zipfile

    path = folder / f"stage-{stage}.pth"
    fix = (f"run without --resume to start over (the previous finished run in "
           f"{folder.parent.name.removesuffix('.partial')} is kept until the new one succeeds)")
    if not path.is_file():
        raise RunError(f"{path} is missing, but state.json says stage '{stage}' finished; {fix}")
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("error", message="Could not load the optimizer state")
            learn.load(f"stage-{stage}", with_opt=True, weights_only=True)
    except (OSError, RuntimeError, EOFError, ValueError, KeyError, IndexError, TypeError, AttributeError,
            UserWarning, pickle.UnpicklingError, struct.error, zipfile.BadZipFile) as e:
        raise RunError(f"{path} is damaged or belongs to another model ({type(e).__name__}: "
                       f"{str(e).splitlines()[0][:100] if str(e) else 'unreadable'}); {fix}") from None
