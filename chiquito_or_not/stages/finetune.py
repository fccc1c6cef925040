"""The finetune stage: LR finder, three training stages with checkpoints, export, evaluation."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from fastai.torch_core import set_seed

from ..core.errors import RecipeError, RunError
from ..core.files import atomic_write_text, read_csv_rows, write_csv
from ..core.layout import DatasetFolder, RunFolder
from ..core.paths import Roots
from ..core.plots import plot_history
from ..core.recipe import Recipe, recipe_to_dict, write_resolved
from ..core.stats import wilson
from ..core.task_registry import get_task
from ..train.backbones import get_backbone
from ..train.features import head_learner
from ..train.fit import (
    accelerate_available,
    apply_deterministic,
    apply_precision,
    channels_last,
    environment,
    export_learner,
    fit_ctx,
    fit_sgdr,
    load_checkpoint,
    reseed,
    tensorboard_available,
    tensorboard_cb,
    world_and_rank,
)
from ..train.keep_best import BestEpoch, KeepBest
from ..train.learner import BodyBatchNormEval, LogProgress, keep_frozen, make_learner
from ..train.lr_find import find_lr
from ..train.runs import STAGES, promote, read_json, refuse_files_in_place, resumable_state
from .evaluate import evaluate
from .report import write_report

__all__ = [
    "STAGES",
    "finetune",
    "lr_find_only",
    "FinetuneResult",
    "history_columns",
    "finetune_lines",
    "data_size_lines",
]


UNFROZEN_TOP_LR = 1e-3  # lrs = "auto": the head's rate when unfrozen is at most this (fastai fine_tune's 2e-3 / 2)


def history_columns(task) -> list[str]:
    """history.csv's columns: the losses, then the task's metrics."""
    return ["stage", "epoch", "train_loss", "valid_loss", *task.model.history_metrics]


@dataclass
class FinetuneResult:
    run: Path
    learn: object
    timings: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    lr: dict = field(default_factory=dict)


def _fingerprint(recipe: Recipe) -> str:
    d = recipe_to_dict(recipe)
    d.pop("path", None)
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def _read_history(path: Path) -> list[dict]:
    return read_csv_rows(path) if path.is_file() else []


def _stage_epochs(recipe: Recipe, stage: str) -> int:
    f = recipe.finetune
    if stage == "frozen":
        return f.frozen.epochs
    s = f.augmented if stage == "augmented" else f.unfrozen
    return sum(s.cycle_len * s.cycle_mult**i for i in range(s.cycles))


def _learner(recipe: Recipe, task, root: Path, run: Path):
    """(learn, dls_plain, dls_aug), seeded: the one way finetune and lr-find build their learner.
    Raises DataError when `chiquito dataset` has not run, WeightsError for missing or bad weights."""
    apply_deterministic(recipe)
    set_seed(recipe.seed, reproducible=True)
    dls_plain = task.data.dataloaders(recipe, root, augment=False)
    dls_aug = task.data.dataloaders(recipe, root, augment=True)
    return make_learner(recipe, task, dls_plain, run, root), dls_plain, dls_aug


def _cached_head(learn, recipe: Recipe, task, precision: str, world: int, cache: Path, log):
    """The head learner on cached body features (frozen stage and LR finder), or None when off."""
    f = recipe.finetune
    if not (f.frozen.feature_cache and task.model.feature_cache) or get_backbone(f.backbone).family == "scratch":
        return None
    if world > 1:
        log("  feature cache off: several processes train (each would compute every image)")
        return None
    hl = head_learner(learn, f.backbone, cache / "features", log=log)
    if precision != "fp32":
        apply_precision(hl, precision)
    return hl


def lr_find_only(recipe: Recipe, log=print, data_root: Path | None = None, roots: Roots | None = None) -> dict:
    """The LR finder exactly as `finetune` runs it (same seed, data, class weights, feature cache and
    precision), so the rate it prints is the one `finetune` would choose; writes runs/NAME/lr_find.*."""
    roots = roots or Roots.from_env()
    root = Path(data_root) if data_root else roots.dataset(recipe.name)
    out = roots.run(recipe.name)
    task = get_task(recipe.task)
    learn, dls_plain, dls_aug = _learner(recipe, task, root, out)
    hl = _cached_head(learn, recipe, task, apply_precision(learn, recipe.finetune.precision), 1, roots.cache, log)
    reseed(recipe.seed, dls_plain, dls_aug, *([hl.dls] if hl else []))  # as finetune does before it
    return find_lr(hl or learn, out, num_it=recipe.finetune.lr_find_iters)


@dataclass
class _Stages:
    """What the three stages share: the learner (and the head learner on cached features), the data,
    the learning rates the LR finder chose, how to freeze, and the processes training together."""

    recipe: Recipe
    learn: object
    hl: object
    dls_plain: object
    dls_aug: object
    run: Path
    world: int
    lr_info: dict
    log: object
    best: BestEpoch | None = None  # with keep = "best": the run's best epoch so far
    epochs_done: int = 0  # the run's epochs before the stage that trains now

    def lr(self, value):
        return self.lr_info["chosen"] if value == "auto" else value

    def layer_lrs(self) -> tuple[list[float], str]:
        """The unfrozen stage's rates per layer group, and how they were chosen."""
        lrs = self.recipe.finetune.unfrozen.lrs
        if lrs != "auto":
            return list(lrs), "from the recipe"
        top = min(self.lr_info["chosen"], UNFROZEN_TOP_LR * 2) / 2
        return [top / 100, top / 10, top], (
            f"auto: half the LR finder's {self.lr_info['chosen']:.1e} (at most {UNFROZEN_TOP_LR:.0e}) on the head, "
            "a tenth of it per group towards the input (fastai's fine_tune)"
        )

    def reseed(self, step: int) -> None:
        """Step 0 is the LR finder, 1..3 the stages: each starts from the recipe's seed and its number."""
        reseed(self.recipe.seed + step, self.dls_plain, self.dls_aug, *([self.hl.dls] if self.hl else []))

    def cbs(self, stage: str, body: bool = True) -> list:
        """Progress (and tensorboard) callbacks; for `learn`, also the body's BatchNorm kept in eval mode."""
        f = self.recipe.finetune
        cbs = [LogProgress(stage)] + ([tensorboard_cb(self.run, stage)] if f.tensorboard else [])
        if self.best is not None:
            patience = f.patience if stage != "frozen" else 0
            cbs.append(KeepBest(self.best, stage, self.learn.model, self.epochs_done, patience))
        return cbs + ([BodyBatchNormEval()] if body and f.batchnorm == "frozen" else [])

    def freeze(self):
        # a body trained from scratch has nothing worth freezing: its "frozen" stages train everything
        scratch = get_backbone(self.recipe.finetune.backbone).family == "scratch"
        (self.learn.unfreeze if scratch else self.learn.freeze)()


def _frozen(st: _Stages, n_ep: int, i: int):
    """Stage 1: the new head on the frozen pretrained body, one cycle (on cached body features if on)."""
    lr = st.lr(st.recipe.finetune.frozen.lr)
    st.log(
        f"stage {i}/3 frozen: {n_ep} epochs, one cycle at lr {lr:.1e}"
        + (", head on cached body features" if st.hl else "")
    )
    st.learn.dls = st.dls_plain
    st.freeze()
    if st.hl:
        st.hl.fit_one_cycle(n_ep, lr, cbs=st.cbs("frozen", body=False))
        return st.hl.recorder
    with fit_ctx(st.learn, st.world):
        st.learn.fit_one_cycle(n_ep, lr, cbs=st.cbs("frozen"))
    return st.learn.recorder


def _augmented(st: _Stages, n_ep: int, i: int):
    """Stage 2: the same with data augmentation, SGDR restarts."""
    s = st.recipe.finetune.augmented
    st.log(
        f"stage {i}/3 augmented: {s.cycles} SGDR cycles of {s.cycle_len} epoch(s) x{s.cycle_mult}, lr {st.lr(s.lr):.1e}"
    )
    st.learn.dls = st.dls_aug
    st.freeze()
    with fit_ctx(st.learn, st.world):
        fit_sgdr(st.learn, s.cycles, s.cycle_len, st.lr(s.lr), s.cycle_mult, cbs=st.cbs("augmented"))
    return st.learn.recorder


def _unfrozen(st: _Stages, n_ep: int, i: int):
    """Stage 3: the whole network (or what keep_frozen leaves), one learning rate per layer group, SGDR."""
    s = st.recipe.finetune.unfrozen
    lrs, how = st.layer_lrs()
    st.log(
        f"stage {i}/3 unfrozen: {s.cycles} SGDR cycles ({n_ep} epochs), lrs per layer group "
        + ", ".join(f"{x:.0e}" for x in lrs)
        + ("" if s.lrs != "auto" else f" ({how})")
    )
    st.learn.dls = st.dls_aug
    st.log(f"  {keep_frozen(st.learn, s.keep_frozen)}")
    with fit_ctx(st.learn, st.world):
        fit_sgdr(st.learn, s.cycles, s.cycle_len, lrs, s.cycle_mult, cbs=st.cbs("unfrozen"))
    return st.learn.recorder


# the tutorial's schedule: each stage is a row, run in order, checkpointed when it finishes
SCHEDULE = {"frozen": _frozen, "augmented": _augmented, "unfrozen": _unfrozen}
assert tuple(SCHEDULE) == STAGES


def _check_before_writing(recipe: Recipe) -> tuple[int, int]:
    """(world, rank) once what can be checked without data is fine: precision, processes, extras."""
    import torch

    if recipe.finetune.precision in ("fp16", "bf16") and not torch.cuda.is_available():
        raise RecipeError(
            f'{recipe.path}: finetune.precision = "{recipe.finetune.precision}" needs a CUDA GPU; '
            'use "auto" (fp32 on a CPU) or "fp32"'
        )
    world, rank = world_and_rank()
    if world > 1:
        accelerate_available()
    if recipe.finetune.tensorboard:
        tensorboard_available()
    return world, rank


def _auto_stages(recipe: Recipe) -> list[str]:
    """The stages that train and take their rate from the LR finder ("auto")."""
    f = recipe.finetune
    rates = (("frozen", f.frozen.lr), ("augmented", f.augmented.lr), ("unfrozen", f.unfrozen.lrs))
    return [k for k, v in rates if v == "auto" and _stage_epochs(recipe, k)]


def _lr_find(st: _Stages, state: dict, resume: bool, rank: int) -> dict:
    """The LR finder's choice: rerun, or read back on --resume; {} when the recipe needs none."""
    f = st.recipe.finetune
    if not (f.lr_find or _auto_stages(st.recipe)):
        return {}
    if resume and (saved := read_json(RunFolder(st.run).lr_find_json)):
        return saved
    t, write = time.time(), not rank
    st.reseed(0)
    if st.world > 1:  # the first process finds the rate on all the batches, as one process would; all use it
        from ..train.distributed import first_process_decides

        info = first_process_decides(
            lambda: find_lr(st.hl or st.learn, st.run, num_it=f.lr_find_iters, write=write), rank
        )
    else:
        info = find_lr(st.hl or st.learn, st.run, num_it=f.lr_find_iters, write=write)
    state["timings"]["lr_find"] = round(time.time() - t, 1)
    sug = ", ".join(f"{k} {v:.1e}" for k, v in info["suggestions"].items()) or "none"
    auto = _auto_stages(st.recipe)
    use = (
        f"{', '.join(auto)} stage(s) use {info['chosen']:.1e} ({info['chosen_by']})"
        if auto
        else "not used: the recipe fixes every rate"
    )
    st.log(f"  lr_find: {info['points']} points; suggestions: {sug}; {use}")
    return info


def _numbers(d: dict, prefix: str = "") -> dict:
    """The float leaves of a nested dict, keyed by their dotted path."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out |= _numbers(v, f"{prefix}{k}.")
        elif isinstance(v, float):
            out[f"{prefix}{k}"] = v
    return out


def _check_finite(history: list[dict], final: Path) -> None:
    """A run whose losses or metrics are not finite numbers has failed: RunError, nothing promoted."""
    for row in history:
        bad = [k for k, v in row.items() if isinstance(v, float) and not math.isfinite(v)]
        if bad:
            raise RunError(
                f"training diverged: {row.get('stage', '?')} epoch {row.get('epoch', '?')} has {bad[0]} = "
                f"{row[bad[0]]}; lower that stage's learning rate (or check the data); "
                f"{final} was left as it was"
            )


def _start_state(recipe: Recipe, root: Path, run: Path, final: Path, resume: bool) -> dict:
    """state.json's start: the recipe's fingerprint, no stage done, the dataset and the environment; or, with
    `resume`, the state of the interrupted run (checked to be this recipe's)."""
    state = {
        "fingerprint": _fingerprint(recipe),
        "done": [],
        "timings": {},
        "dataset": str(root.resolve()),
        "task": recipe.task,
        "environment": environment(recipe),
    }
    return resumable_state(run, final, state["fingerprint"]) if resume else state


FEW_PER_CLASS = 30  # fewer training pictures of a class than this: said before training


def data_size_lines(root: Path, n_valid: int) -> list[str]:
    """What a run of this size can show, said before training: how wide a validation figure's interval is,
    and which labels have few training pictures (from split.csv), with what to add."""
    lo, hi = wilson(round(0.9 * n_valid), n_valid) if n_valid else (0.0, 1.0)
    out = [
        f"a share near 0.90 (accuracy, recall) on {n_valid} validation images is known to {lo:.2f}-{hi:.2f} "
        "(95 %); four times the pictures halve that width"
    ]
    split = DatasetFolder(root).split_csv
    counts = (
        Counter(r["label"] for r in read_csv_rows(split) if r["split"] == "train" and r["label"])
        if split.is_file()
        else {}
    )
    few = {k: n for k, n in sorted(counts.items()) if n < FEW_PER_CLASS}
    if few:
        out.append(
            "few training pictures: "
            + ", ".join(f"{k} {n}" for k, n in few.items())
            + f"; under {FEW_PER_CLASS} per class a model is rarely steady: add pictures of these and run "
            "`chiquito dataset` again"
        )
    return out


def _make_stages(recipe: Recipe, task, parts: tuple, run: Path, world: int, state: dict, precision, cache, log):
    """The stages' shared state: the learner and its data `parts`, the head learner on cached features (when
    the frozen stage is still to run) and, with keep = "best", the run's best epoch so far."""
    learn, dls_plain, dls_aug = parts
    hl, t = None, time.time()
    if "frozen" not in state["done"]:
        hl = _cached_head(learn, recipe, task, precision, world, cache, log)
        if hl:
            state["timings"]["features"] = round(time.time() - t, 1)
    st = _Stages(recipe, learn, hl, dls_plain, dls_aug, run, world, {}, log)
    if recipe.finetune.keep == "best":
        st.best = BestEpoch.restored(state.get("kept"), RunFolder(run).best_weights, task.model.history_metrics[0])
    return st


def finetune(
    recipe: Recipe, resume: bool = False, log=print, data_root: Path | None = None, roots: Roots | None = None
) -> FinetuneResult:
    """Train the recipe's model in three stages into its run folder, export model.pkl, evaluate it. `roots`
    (default Roots.from_env()) holds the dataset (unless `data_root` names it), the run and the feature cache.

    The run is built in runs/NAME.partial/ and replaces runs/NAME/ only when it has succeeded; everything
    that can be checked (recipe, dataset, weights, resume state) is checked before anything is written."""
    roots = roots or Roots.from_env()
    final, run = roots.run(recipe.name), roots.partial_run(recipe.name)
    root = Path(data_root) if data_root else roots.dataset(recipe.name)
    world, rank = _check_before_writing(recipe)
    refuse_files_in_place(final, run)
    if rank:  # under `accelerate launch` only the first process writes files and prints
        log = lambda *_: None  # noqa: E731
    files, task = RunFolder(run), get_task(recipe.task)
    state_path, ckpt, columns = files.state, files.checkpoints, history_columns(task)
    state = _start_state(recipe, root, run, final, resume)
    t0 = time.time()
    learn, dls_plain, dls_aug = _learner(recipe, task, root, run)  # DataError, WeightsError: nothing written yet
    if state["done"]:
        load_checkpoint(learn, ckpt, state["done"][-1])
        log(f"  resumed after stage '{state['done'][-1]}' from {ckpt}")
    if not rank:
        if not resume:  # an interrupted earlier attempt is started over; the finished run in `final` stays
            shutil.rmtree(run, ignore_errors=True)
        write_resolved(recipe, run)
    precision = apply_precision(learn, recipe.finetune.precision)
    channels_last(learn.model, task.model.channels_last)
    if recipe.finetune.tensorboard and not rank:
        tensorboard_cb(run, None, dls_aug)
    log(
        f"  data: {len(dls_plain.train_ds)} train / {len(dls_plain.valid_ds)} valid images, "
        f"classes {', '.join(dls_plain.vocab)}; backbone {recipe.finetune.backbone} at {recipe.finetune.size}px, "
        f"{precision} on {dls_plain.device}" + (f", {world} processes" if world > 1 else "")
    )
    for line in data_size_lines(root, len(dls_plain.valid_ds)):
        log(f"  {line}")

    st = _make_stages(recipe, task, (learn, dls_plain, dls_aug), run, world, state, precision, roots.cache, log)
    st.lr_info = _lr_find(st, state, resume, rank)

    history = _train_stages(st, state, files, columns, rank)
    kept = _keep(st, history)
    if world > 1:  # the processes are done training together: the first one exports and evaluates alone
        from ..train.distributed import finish

        finish()
    _check_finite(history, final)
    _plain_model(learn, dls_plain, precision, final)
    if rank:
        return FinetuneResult(run=run, learn=learn, timings=state["timings"], lr=st.lr_info)
    if history:
        plot_history(history, files.loss_curve, columns[4])
    export_learner(learn, files.model)
    state["timings"]["train_total"] = round(time.time() - t0, 1)
    atomic_write_text(state_path, json.dumps(state, indent=1) + "\n")
    metrics = evaluate(run, log=log, notice=lambda _: None)  # our own file, written a moment ago
    _check_finite([{"stage": "evaluate", "epoch": "-", **_numbers(metrics)}], final)
    metrics["model"] = str(RunFolder(final).model)
    if kept:
        metrics["kept"] = kept | _kept_note(metrics)
    metrics["environment"] = state["environment"]
    atomic_write_text(files.metrics, json.dumps(metrics, indent=2) + "\n")
    promote(run, final)
    learn.path = final
    write_report(final, log=log)
    return FinetuneResult(run=final, learn=learn, timings=state["timings"], metrics=metrics, lr=st.lr_info)


def _keep(st: _Stages, history: list[dict]) -> dict:
    """Put the kept epoch's weights back into the model (keep = "best") and say which epoch is kept: its stage,
    epoch, metric and value, and the best value any epoch reached; {} when nothing was trained."""
    metric = _watched_metric(history)
    if not metric:
        return {}
    rows = [r for r in history if _finite(r.get(metric))]
    if not rows:
        return {}
    best = max(rows, key=lambda r: (float(r[metric]), -float(r["valid_loss"])))
    row = history[-1]
    if st.best is not None and st.best.weights is not None:
        st.best.load_into(st.learn.model)
        row = next((r for r in rows if int(float(r["epoch"])) == st.best.epoch), best)
    kept = {
        "stage": row["stage"],
        "epoch": int(float(row["epoch"])),
        "metric": metric,
        "value": float(row[metric]),
        "best": float(best[metric]),
        "last": float(history[-1][metric]) if _finite(history[-1].get(metric)) else None,
        "of": len(history),
        "keep": st.recipe.finetune.keep,
    }
    return kept


def _watched_metric(history: list[dict]) -> str:
    """The metric history.csv watches: its first column after the losses ("" when there is none)."""
    cols = list(history[0]) if history else []
    return cols[4] if len(cols) > 4 else ""


def _finite(v) -> bool:
    try:
        return math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def _kept_note(metrics: dict) -> dict:
    """How far the kept epoch's validation figure can be trusted: the validation split chose it."""
    if "test" in metrics:
        return {
            "chosen_on": "valid",
            "note": "the validation split chose this epoch; the test split's figures are not biased by that choice",
        }
    return {
        "chosen_on": "valid",
        "note": "the validation split chose this epoch, so its figures there are optimistic; "
        "set dataset.test for figures that did not choose it",
    }


def _train_stages(st, state: dict, files: RunFolder, columns: list, rank: int) -> list[dict]:
    """The schedule's stages that are not done yet, each saved (history, checkpoint, state) once it finishes."""
    history = _read_history(files.history)
    for i, (stage, train) in enumerate(SCHEDULE.items(), 1):
        n_ep = _stage_epochs(st.recipe, stage)
        if stage in state["done"] or n_ep == 0:
            continue
        t = time.time()
        st.reseed(i)
        st.epochs_done = len(history)
        recorder = train(st, n_ep, i)
        history += [
            dict(zip(columns, [stage, len(history) + k + 1, *map(float, v)])) for k, v in enumerate(recorder.values)
        ]
        state["done"].append(stage)
        state["timings"][stage] = round(time.time() - t, 1)
        if st.best is not None:
            state["kept"] = st.best.state()
        if not rank:
            write_csv(files.history, history, columns)
            st.learn.save(f"stage-{stage}", with_opt=True)
            if st.best is not None:
                st.best.save(files.best_weights)
            atomic_write_text(files.state, json.dumps(state, indent=1) + "\n")  # the stage is now finished
    return history


def _plain_model(learn, dls_plain, precision: str, final: Path) -> None:
    """The trained model checked finite and put back as any user expects it: fp32, PyTorch's default layout, the
    plain DataLoaders."""
    import torch

    if not all(bool(torch.isfinite(p).all()) for p in learn.model.parameters()):
        raise RunError(
            "training diverged: the model's weights are not finite numbers; lower the learning rates; "
            f"{final} was left as it was"
        )
    learn.dls = dls_plain
    channels_last(learn.model, False)  # the exported model in PyTorch's default layout, as any user expects
    if precision != "fp32":
        learn.to_fp32()  # the exported model is plain fp32: it loads and predicts on any CPU


def finetune_lines(res: FinetuneResult, recipe: Recipe) -> list[str]:
    """What `chiquito finetune` says at the end: timings, the kept epoch, the figures, what was written."""
    out = ["timings: " + "  ".join(f"{k} {v:.0f}s" for k, v in res.timings.items())]
    if kept := res.metrics.get("kept"):
        last = "nan" if kept["last"] is None else f"{kept['last']:.4f}"
        out.append(
            f"kept ({kept['keep']}): {kept['stage']} epoch {kept['epoch']} of {kept['of']} ({kept['metric']} "
            f"{kept['value']:.4f} on valid; the best epoch {kept['best']:.4f}, the last {last}); {kept['note']}"
        )
    task = get_task(recipe.task)
    out += [
        f"{split} {task.evaluation.headline(res.metrics[split])}" for split in ("valid", "test") if split in res.metrics
    ]
    lr_png = ", lr_find.png" if (res.run / "lr_find.png").is_file() else ""
    out.append(
        f"wrote {res.run}/ (model.pkl, metrics.json, report.html, README.md, loss_curve.png{lr_png} and the "
        "task's figures)"
    )
    return out
