"""The `chiquito` command: parse arguments, call a stage, print a summary, map known errors to exit 2."""

from __future__ import annotations

import functools
import json
import os
import re
import sys
import warnings
from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from . import __version__
from .core.errors import ChiquitoError
from .core.files import bytes_written, shown_path
from .core.layout import RunFolder
from .core.paths import Roots
from .core.recipe import load_recipe, recipe_json_schema, recipe_to_dict, recipe_toml
from .core.task_registry import get_task
from .stages.dataset import build_dataset, dataset_lines
from .stages.predict import done_in_jsonl, expand_paths, predict_model, predict_model_to_jsonl
from .stages.predict_ray import predict_ray
from .stages.report import write_report
from .stages.review import find_suspects, review_page

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Turn 'is this a picture of X?' into a trained, evaluated, exported model.",
)


def _say_version(value: bool) -> None:
    if value:
        typer.echo(f"chiquito_or_not {__version__}")
        raise typer.Exit()


RecipeArg = typer.Argument(..., help="Recipe file, e.g. recipes/face-or-not.toml", show_default=False)


def _fail(msg: str, code: int = 2):
    typer.echo(f"error: {msg}", err=True)
    raise typer.Exit(code)


# what Ctrl-C keeps, per command
_INTERRUPTED = {
    "finetune": "interrupted; finished stages are kept in runs/NAME.partial/ and the previous run in runs/NAME/ "
    "is untouched: `chiquito finetune RECIPE --resume` goes on",
    "dataset": "interrupted; finished downloads and extracted sources are kept: run `chiquito dataset RECIPE` "
    "again to go on",
}


def _disk_full(e: OSError) -> str:
    import shutil

    where = Path(e.filename).parent if e.filename else Path.cwd()
    while not where.exists() and where != where.parent:
        where = where.parent
    try:
        free = f"{shutil.disk_usage(where).free / 2**20:.0f} MB free"
    except OSError:
        free = "free space unknown"
    return (
        f"no space left on the device holding {where} ({free}) while writing {e.filename or 'a file'}; "
        f"this command wrote {bytes_written() / 2**20:.1f} MB before it filled, and no half-written file "
        "was kept: free some space (or move --data-root/--runs-root) and run it again"
    )


def _friendly(fn):
    """Known errors become one line on stderr and exit code 2; Ctrl-C says how to go on."""

    @functools.wraps(fn)
    def wrapper(*a, **kw):
        import errno

        try:
            return fn(*a, **kw)
        except ChiquitoError as e:
            _fail(str(e))
        except KeyboardInterrupt:
            _fail(_INTERRUPTED.get(fn.__name__, "interrupted"), 130)
        except OSError as e:
            if e.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
                _fail(_disk_full(e))
            raise

    return wrapper


@app.callback()
def main(
    data_root: Optional[Path] = typer.Option(None, help="Data root (default ./datasets or $CHIQUITO_DATA)"),
    runs_root: Optional[Path] = typer.Option(None, help="Runs root (default ./runs or $CHIQUITO_RUNS)"),
    version: bool = typer.Option(
        False, "--version", callback=_say_version, is_eager=True, help="Print the version and exit"
    ),
):
    # a library deep in the stack calls torch.jit.script at import; users cannot act on that warning
    warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*", category=FutureWarning)
    global _ROOTS
    _ROOTS = Roots.from_env(data_root, runs_root)  # resolved once here; every stage gets it as a parameter


_ROOTS = Roots()


def _recipe(path: Path, overrides=()):
    """The recipe file, loaded and checked, its notes (paths found from the current folder) said on stderr."""
    notes: list[str] = []
    r = load_recipe(path, overrides, notes)
    for n in notes:
        typer.echo(f"note: {n}", err=True)
    return r


def roots() -> Roots:
    """The data and runs roots of this command (the options, else the environment, else ./datasets, ./runs)."""
    return _ROOTS


recipe_app = typer.Typer(no_args_is_help=True, help="The recipe's schema, and a recipe as it resolves.")
app.add_typer(recipe_app, name="recipe")


@recipe_app.command("schema")
def recipe_schema():
    """Print the recipe's JSON Schema (for editors: Taplo / Even Better TOML complete and check recipes with it)."""
    typer.echo(json.dumps(recipe_json_schema(), indent=2))


@recipe_app.command("show")
@_friendly
def recipe_show(
    recipe: Path = RecipeArg,
    overrides: Optional[list[str]] = typer.Argument(
        None, help="KEY=VALUE with dotted keys, e.g. finetune.size=160 dataset.balance=weights", show_default=False
    ),
    as_json: bool = typer.Option(False, "--json", help="JSON (as runs/NAME/recipe.json) instead of TOML"),
):
    """Print the recipe with every default filled in, after KEY=VALUE overrides; checked as a recipe file is."""
    r = _recipe(recipe, overrides or ())
    typer.echo(json.dumps(recipe_to_dict(r), indent=2) if as_json else recipe_toml(r).rstrip("\n"))


OverridesArg = typer.Argument(
    None,
    help="KEY=VALUE with the recipe's dotted keys (finetune.size=160, dataset.test=0.1), or epochs=N for the whole "
    "schedule",
    show_default=False,
)


@app.command()
@_friendly
def train(
    path: Path = typer.Argument(
        ...,
        help="A folder of your pictures (one sub-folder per class; train/ valid/ split folders; or images with "
        "box annotations), or a recipe file",
        show_default=False,
    ),
    overrides: Optional[list[str]] = OverridesArg,
):
    """Your pictures to a trained, evaluated, exported model in one command: infers the task and classes from
    the folder, then runs dataset, finetune (LR finder rates, the best epoch kept, evaluation) and ONNX export;
    the resolved recipe is written into the run folder as recipe.toml."""
    from .stages.train import plan_training
    from .stages.train import train as run_train

    plan = plan_training(path, overrides or (), roots())
    typer.echo(f"train {plan.recipe.name} from {path}")
    for line in plan.said:
        typer.echo(f"  {line}")
    res = run_train(plan, log=typer.echo, roots=roots())
    typer.echo(f"recipe: {res.recipe_file} (train it again: chiquito train {res.recipe_file})")
    opened = RunFolder(res.run).metrics
    typer.echo(f"open: {opened}" + (f"; the model: {res.onnx} and {RunFolder(res.run).model}" if res.onnx else ""))


@app.command()
@_friendly
def report(
    run: Path = typer.Argument(..., help="Run folder, e.g. runs/NAME", show_default=False),
    open_: bool = typer.Option(False, "--open", help="Also open the page in the web browser"),
):
    """Write runs/NAME/report.html (one self-contained page: data, training, results, exports) and the model
    card runs/NAME/README.md from the run's files; print the page's path."""
    page = write_report(run)
    typer.echo(str(page))
    if open_:
        import webbrowser

        webbrowser.open(page.resolve().as_uri())


@app.command()
@_friendly
def new(
    name: str = typer.Argument(..., help="The recipe's name: writes NAME.toml here", show_default=False),
    folders: Optional[list[Path]] = typer.Argument(
        None, help="One folder per class, or one folder holding class sub-folders (or boxes)", show_default=False
    ),
    search: Optional[list[str]] = typer.Option(None, "--search", help="A web image search query, one per class"),
):
    """Write NAME.toml, a commented recipe for your folders or web searches, to edit and `chiquito train`."""
    from .stages.train import new_recipe_text

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,79}", name):
        _fail(f"{name!r}: a recipe name is letters, digits, '-', '_' or '.', e.g. birds")
    out = Path(f"{name}.toml")
    if out.exists():
        _fail(f"{out} exists; choose another NAME or remove it (it is not overwritten)")
    text = new_recipe_text(name, out, folders or (), search or ())
    out.write_text(text, encoding="utf-8")
    typer.echo(f"wrote {out}; train it with: chiquito train {out}")


@app.command()
@_friendly
def dataset(
    recipe: Path = RecipeArg,
    retry_failed: bool = typer.Option(
        False,
        "--retry-failed",
        help="Download again the URLs that failed for reasons that may pass (timeouts, 5xx, connection errors)",
    ),
    no_review: bool = typer.Option(False, "--no-review", help="Ignore the decisions in datasets/NAME/review.csv"),
):
    """Fetch, clean, de-duplicate, balance and split the recipe's images into datasets/NAME/;
    applies the decisions of `chiquito review` (datasets/NAME/review.csv) unless --no-review."""
    r = _recipe(recipe)
    typer.echo(f"dataset {r.name}: sources")
    s = build_dataset(r, log=typer.echo, retry_failed=retry_failed, use_review=not no_review, roots=roots())
    typer.echo("\n".join(dataset_lines(s)))


@app.command("lr-find")
@_friendly
def lr_find(recipe: Path = RecipeArg):
    """Run the LR finder on the frozen learner, as finetune does; writes runs/NAME/lr_find.png and .json."""
    from .stages.finetune import lr_find_only

    r = _recipe(recipe)
    run = roots().run(r.name)
    info = lr_find_only(r, log=typer.echo, roots=roots())
    for name, lr in info["suggestions"].items():
        typer.echo(f"  {name:<8} {lr:.2e}")
    for name, err in info["errors"].items():
        typer.echo(f"  {name:<8} unavailable ({err})")
    typer.echo(f"chosen {info['chosen']:.2e} ({info['chosen_by']}); wrote {run}/lr_find.png, lr_find.json")


@app.command()
@_friendly
def finetune(
    recipe: Path = RecipeArg,
    resume: bool = typer.Option(False, "--resume", help="Go on after the last finished stage"),
    seeds: int = typer.Option(
        1,
        "--seeds",
        min=1,
        help="Train with this many seeds (the recipe's, +1, "
        "...) on the same split; report each figure's mean and spread",
    ),
):
    """LR finder, then frozen head, augmented, unfrozen stages; exports and evaluates runs/NAME/model.pkl."""
    from .stages.finetune import finetune as run_finetune
    from .stages.finetune import finetune_lines

    r = _recipe(recipe)
    # under torchrun / accelerate launch every process runs this command: only the first one speaks
    say = typer.echo if os.environ.get("RANK", "0") in ("", "0") else (lambda *_: None)
    if seeds > 1 and int(os.environ.get("WORLD_SIZE", "1") or 1) > 1:
        _fail("--seeds trains one run after another in one process; launch it without torchrun/accelerate")
    if seeds > 1:
        if resume:
            _fail("--resume continues one run; run --seeds without it (each seed's run is built afresh)")
        from .stages.seeds import seed_spread

        typer.echo(f"finetune {r.name} with {seeds} seeds")
        seed_spread(r, seeds, log=typer.echo, roots=roots())
        out = RunFolder(roots().run(r.name))
        typer.echo(f"wrote {out.seeds_csv} and {out.seeds_json.name}")
        return
    say(f"finetune {r.name}")
    res = run_finetune(r, resume=resume, log=typer.echo, roots=roots())
    say("\n".join(finetune_lines(res, r)))


@app.command()
@_friendly
def evaluate(
    target: Path = typer.Argument(..., help="Recipe file or run folder", show_default=False),
    data: Optional[Path] = typer.Option(None, help="Folder with one sub-folder per class"),
    out: Optional[Path] = typer.Option(None, help="Where figures and metrics go"),
    model: Optional[Path] = typer.Option(
        None, help="Score this export (model.onnx, model.tflite) instead of model.pkl: what a phone will see"
    ),
):
    """Reload the exported model.pkl and write metrics, confusion matrix and worst mistakes.

    model.pkl is a pickle: loading it runs any code it holds. Evaluate only runs you made or trust."""
    from .stages.evaluate import evaluate as run_evaluate

    res = run_evaluate(target, data=data, out=out, log=typer.echo, model_file=model, roots=roots())
    typer.echo(f"wrote metrics.json beside the figures for {res['model']}")


def _say_jsonl_counts(out: Path, c: dict) -> None:
    typer.echo(
        f"{out}: {c['predicted']} predicted now, {c['failed']} failed (the error is in their line; a rerun "
        f"tries them again), {c['done']} already there",
        err=True,
    )


@app.command()
@_friendly
def predict(
    model: Path = typer.Argument(
        ..., help="model.pkl, or model.onnx / model.tflite (run without torch)", show_default=False
    ),
    paths: list[Path] = typer.Argument(..., help="Image files or folders", show_default=False),
    as_json: bool = typer.Option(False, "--json", help="One JSON document on stdout"),
    top_k: int = typer.Option(1, "--top-k", min=1, help="Classifier: show the k most likely classes"),
    threshold: Optional[float] = typer.Option(
        None, "--threshold", min=0.0, max=1.0, help="Detector: lowest score shown (default: the recipe's)"
    ),
    draw: Optional[Path] = typer.Option(
        None, "--draw", help="Detector: write each image with its boxes into this folder (a new or empty one)"
    ),
    bs: int = typer.Option(64, min=1, help="Batch size"),
    out: Optional[Path] = typer.Option(
        None,
        "--out",
        help="Write one JSON line per image to this .jsonl file as it goes; a rerun skips what it answers",
    ),
    ray: Optional[str] = typer.Option(
        None,
        "--ray",
        metavar="ADDRESS",
        help="Predict over a Ray cluster (needs --out and an .onnx/.tflite model): `local` starts one on this "
        "machine; `auto`, host:6379 or ray://host:10001 joins a running one",
    ),
    ray_workers: int = typer.Option(0, "--ray-workers", min=0, help="With --ray: model workers (0: one per CPU)"),
):
    """Predict each image, in batches: a classifier's label and probability, a detector's boxes (label,
    score, x0 y0 x1 y1 in the image's pixels); exit 1 if any file failed. With --out, the answers are
    streamed into a JSON-lines file (memory holds one chunk) and a rerun predicts only what it lacks.

    A .pkl model is a pickle: loading it runs any code it holds. Load only files you made or trust;
    for a model from someone else use its .onnx or .tflite export, which cannot run code."""
    _check_predict_options(draw, out, as_json, ray)
    if ray is not None:
        files = expand_paths(paths)
        if not files:
            _fail("no images found in the given paths")
        c = predict_ray(model, files, out, ray, ray_workers, bs=bs, threshold=threshold, top_k=top_k)
    elif out is not None:
        c = predict_model_to_jsonl(model, paths, out, bs=bs, threshold=threshold, top_k=top_k, roots=roots())
    else:
        results, drawn = predict_model(model, paths, bs=bs, threshold=threshold, draw=draw, roots=roots())
        if draw is not None:
            typer.echo(f"wrote {drawn} image(s) with their boxes into {draw}", err=True)
        _say_predictions(results, as_json, top_k)
        return
    _say_jsonl_counts(out, c)
    raise typer.Exit(1 if c["failed"] else 0)


def _check_predict_options(draw: Optional[Path], out: Optional[Path], as_json: bool, ray: Optional[str]) -> None:
    """predict's options that cannot go together, refused before the model is loaded."""
    if draw is not None and draw.exists() and (not draw.is_dir() or any(draw.iterdir())):
        _fail(f"--draw {draw}: not a new or empty folder; pick another, so that no file of yours is overwritten")
    if out is not None:
        if as_json or draw is not None:
            _fail("--out writes the answers itself: leave out --json and --draw with it")
        done_in_jsonl(out)  # a folder or device there: refused before the model is loaded
    if ray is not None:
        if out is None:
            _fail("--ray streams the answers into a file: add --out FILE.jsonl")
        if Path(ray).exists():  # `--ray PHOTOS/`: the option took a path as its address
            _fail(f"--ray {ray}: a file or folder, not a cluster address; give --ray one (local, auto, host:6379)")


def _say_predictions(results: list, as_json: bool, top_k: int) -> None:
    """The answers on stdout (errors on stderr); exit 1 when any file failed."""
    if as_json:
        typer.echo(json.dumps([r.to_json(top_k) for r in results], indent=1))
    else:  # one line per file (a detector: per box): a name with a control character is shown escaped
        for r in results:
            if r.error:
                typer.echo(f"error: {shown_path(r.path)}: {r.error}", err=True)
            else:
                for line in r.lines(top_k):
                    typer.echo(f"{shown_path(r.path)}{line}")
    failed = sum(1 for r in results if r.error)
    if failed:
        typer.echo(f"{failed} of {len(results)} file(s) could not be predicted", err=True)
        raise typer.Exit(1)


class ExportFormat(str, Enum):
    onnx = "onnx"
    tflite = "tflite"


@app.command()
@_friendly
def export(
    run: Path = typer.Argument(..., help="Run folder with model.pkl, e.g. runs/face-or-not", show_default=False),
    fmt: ExportFormat = typer.Option(
        ExportFormat.onnx, "--format", help="onnx, or tflite (LiteRT, for phones)", case_sensitive=False
    ),
    int8: bool = typer.Option(
        False,
        "--int8",
        help="Also write an int8 copy (ONNX: dynamic; TFLite: static, "
        "calibrated on the training images) and report its score",
    ),
    uint8: bool = typer.Option(False, "--uint8", help="TFLite: the input is uint8 pixels (default float32)"),
    out: Optional[Path] = typer.Option(None, help="Output file (default RUN/model.onnx or RUN/model.tflite)"),
):
    """Export model.pkl to ONNX or TFLite with its labels and preprocessing; fails, keeping no file,
    unless the file reproduces PyTorch on the validation images.

    model.pkl is a pickle: loading it runs any code it holds. Export only runs you made or trust; the
    .onnx and .tflite files this writes cannot run code, so share those."""
    fmt = fmt.value
    if uint8 and fmt != "tflite":
        _fail("--uint8 applies to --format tflite only")

    if not RunFolder(run).model.is_file():
        _fail(f"{run}: no model.pkl; pass a run folder written by `chiquito finetune RECIPE`")
    if fmt == "tflite":
        from .stages.tflite import export_tflite

        export_tflite(run, int8=int8, uint8=uint8, out=out, log=typer.echo, roots=roots())
        return
    from .stages.export import export_onnx

    export_onnx(run, int8=int8, out=out, log=typer.echo, roots=roots())


@app.command()
@_friendly
def compare(
    recipe: Path = RecipeArg,
    backbones: str = typer.Option(..., help="Comma-separated, e.g. efficientnet_lite0,simple_cnn,resnet18:none"),
):
    """Train each backbone on the same split and schedule; write runs/NAME/leaderboard.csv and .png."""
    from .stages.compare import compare as run_compare
    from .stages.compare import parse_backbones

    r = _recipe(recipe)
    rows = run_compare(r, parse_backbones(backbones), log=typer.echo, roots=roots())
    scores = get_task(r.task).evaluation.scores
    typer.echo(
        f"{'backbone':<22} {'split':<6} "
        + " ".join(f"{k[:21] + ' (95 % CI)':>31}" for k in scores)
        + f" {'train s':>8} {'params':>10} {'ms/img':>7}"
    )
    for x in rows:
        name = x["backbone"] + ("" if x["weights"] == "default" else f":{x['weights']}")
        cells = [f"{x[k]:.3f} ({x[k + '_low']:.3f}-{x[k + '_high']:.3f})" for k in scores]
        typer.echo(
            f"{name:<22} {x['split']:<6} "
            + " ".join(f"{c:>31}" for c in cells)
            + f" {x['train_seconds']:>8.0f} {x['params']:>10,} {x['cpu_ms_per_image']:>7.1f}"
        )
    out = RunFolder(roots().run(r.name))
    typer.echo(f"wrote {out.leaderboard_csv} and {out.leaderboard_png.name}")


@app.command()
@_friendly
def sweep(
    recipe: Path = RecipeArg,
    freeze: str = typer.Option(
        "0,1,2",
        help="Kept frozen in the unfrozen stage: layer groups (0, 1, 2) "
        "or shares of the body's blocks (0.25, 0.5, 0.75)",
    ),
):
    """Train once per amount frozen, choose on validation, report the test score of the chosen one only."""
    from .stages.sweep import parse_freeze
    from .stages.sweep import sweep as run_sweep

    r = _recipe(recipe)
    res = run_sweep(r, parse_freeze(freeze), log=typer.echo, roots=roots())
    score = get_task(r.task).evaluation.scores[0]
    for x in res["rows"]:
        v, t = f"valid_{score}", f"test_{score}"
        typer.echo(
            f"  frozen {x['keep_frozen']:<5g} valid {score} {x[v]:.4f} ({x[v + '_low']:.3f}-"
            f"{x[v + '_high']:.3f})  "
            + (f"chosen: test {score} {x[t]:.4f} ({x[t + '_low']:.3f}-{x[t + '_high']:.3f})" if x["chosen"] else "")
        )
    if res["within_noise"]:
        typer.echo("  the chosen amount is not distinguishable from the runner-up on validation: within noise")


@app.command()
@_friendly
def sanity(
    recipe: Path = RecipeArg,
    images: int = typer.Option(16, min=2, help="How many training images (two batches)"),
    max_epochs: int = typer.Option(60, min=1, help="Give up after this many epochs"),
    target: float = typer.Option(0.99, min=0.0, max=1.0, help="Training accuracy that counts as learnt"),
):
    """Check that the model can learn at all: memorise a couple of batches; exit 0 on pass, 1 on fail."""
    from .stages.sanity import sanity_check

    res = sanity_check(
        _recipe(recipe), n_images=images, max_epochs=max_epochs, target=target, log=typer.echo, roots=roots()
    )
    raise typer.Exit(0 if res["passed"] else 1)


@app.command()
@_friendly
def serve(
    model: Path = typer.Argument(..., help="Exported model.pkl or model.onnx", show_default=False),
    host: str = typer.Option("127.0.0.1", help="Address to listen on (0.0.0.0 for every interface)"),
    port: int = typer.Option(8000, min=1, max=65535),
    max_upload_mb: float = typer.Option(10.0, min=0.01, help="Largest upload or fetched image"),
    allow_network: list[str] = typer.Option(
        [], "--allow-network", help="A CIDR (e.g. 10.1.2.0/24) pasted URLs may reach; repeatable"
    ),
    allow_private_urls: bool = typer.Option(
        False, "--allow-private-urls", help="Let pasted URLs reach loopback/private addresses"
    ),
):
    """Serve a web page and a JSON API (POST /api/predict) that classify uploaded or linked pictures.

    A .pkl model is a pickle: loading it runs any code it holds. Serve only a model.pkl you made or
    trust, or serve the .onnx export. Models are never loaded from a request or a URL."""
    try:
        import uvicorn

        from .stages.serve import create_app
    except ImportError:
        _fail("the web app needs the serve extra: pip install 'chiquito-or-not[serve]'")
    import ipaddress

    for net in allow_network:
        try:
            ipaddress.ip_network(net, strict=False)
        except ValueError:
            _fail(f"--allow-network {net!r} is not a network; write it as a CIDR such as 10.1.2.0/24 or 10.1.2.3/32")
    app_ = create_app(
        model,
        max_bytes=int(max_upload_mb * 2**20),
        allow_private_urls=allow_private_urls,
        allow_networks=tuple(allow_network),
        roots=roots(),
    )
    typer.echo(f"serving {model} on http://{host}:{port}/  (API docs: /docs)")
    uvicorn.run(app_, host=host, port=port, log_level="warning")


@app.command()
@_friendly
def review(
    target: Path = typer.Argument(..., help="Recipe file or run folder", show_default=False),
    list_n: Optional[int] = typer.Option(
        None, "--list", min=1, help="Print the N worst suspects and exit (no browser)"
    ),
    as_json: bool = typer.Option(False, "--json", help="With --list: one JSON document on stdout"),
    show: int = typer.Option(200, min=1, help="How many suspects the page shows, worst first"),
    port: int = typer.Option(8001, min=1, max=65535, help="Port on 127.0.0.1"),
    folds: int = typer.Option(5, min=2, max=20, help="Folds of the out-of-fold predictions"),
):
    """Rank the dataset's images by how likely their label is wrong and review them in a page on
    127.0.0.1. Classification: keep, relabel or exclude, saved to datasets/NAME/review.csv. Detection:
    cleanlab's box scores (overlooked, swapped, badly placed) on out-of-fold detections, each suspect on
    the label page with its given and predicted boxes, saved to datasets/NAME/box_labels.csv. Decisions
    are saved as they are made; `chiquito dataset` applies them (sources are never changed).

    Given a classification run folder, its model.pkl ranks too (top losses): a pickle, loading it runs
    any code it holds. Review only runs you made or trust."""
    log = (lambda m: typer.echo(m, err=True)) if as_json else typer.echo
    res = find_suspects(target, folds=folds, log=log, roots=roots())
    found = res.suspects
    if list_n is not None:
        top = found.items[:list_n]
        if as_json:
            typer.echo(json.dumps(found.to_json(res.name, top), indent=1))
        else:
            typer.echo("\n".join(found.lines(res.name, top)))
        return
    uvicorn = _uvicorn("the review page")
    app_, journal = review_page(res, show)
    typer.echo(
        f"reviewing {res.name}: {min(show, len(found.items))} of {len(found.items)} images on "
        f"http://127.0.0.1:{port}/  (decisions: {journal.path}; Ctrl-C to stop)"
    )
    _serve_page(uvicorn, app_, port, journal)


def _uvicorn(what: str):
    try:
        import uvicorn
    except ImportError:
        _fail(f"{what} needs the serve extra: pip install 'chiquito-or-not[serve]'")
    return uvicorn


def _serve_page(uvicorn, app_, port: int, journal) -> None:
    """Serve a local page on 127.0.0.1 until Ctrl-C, then release its journal's lock."""
    try:
        uvicorn.run(app_, host="127.0.0.1", port=port, log_level="warning")
    finally:
        journal.close()


@app.command()
@_friendly
def label(
    recipe: Path = typer.Argument(..., help="A detection recipe file", show_default=False),
    everything: bool = typer.Option(False, "--all", help="List every image, not only those missing or with bad boxes"),
    port: int = typer.Option(8002, min=1, max=65535, help="Port on 127.0.0.1"),
    no_suggest: bool = typer.Option(False, "--no-suggest", help="Do not load runs/NAME/model.pkl for suggestions"),
):
    """Draw and fix boxes in a page on 127.0.0.1: the images without boxes and those with box problems
    in the last `chiquito dataset`. Saves go to datasets/NAME/box_labels.csv as they are made;
    `chiquito dataset` applies them (source files are never changed).

    When runs/NAME/model.pkl exists its detections are offered as suggestions: a pickle, loading it runs
    any code it holds (--no-suggest does not load it)."""
    uvicorn = _uvicorn("the label page")
    from .stages.label import create_label_app, find_label_items

    page = find_label_items(
        _recipe(recipe), everything=everything, log=typer.echo, use_run=not no_suggest, roots=roots()
    )
    app_ = create_label_app(page)
    typer.echo(
        f"labelling {page.name}: {len(page.listing.items)} images on http://127.0.0.1:{port}/  "
        f"(boxes: {app_.state.journal.path}; Ctrl-C to stop)"
    )
    _serve_page(uvicorn, app_, port, app_.state.journal)


# glibc hands large freed blocks back to the OS and page-faults them in again on the next batch, a large
# share of a training step on a CPU (the README's "Speed on a CPU"; bench/_env.py runs every benchmark
# under the same thresholds). The thresholds must be in the environment before the process starts.
_MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "1000000000", "MALLOC_TRIM_THRESHOLD_": "1000000000"}


def _say_usage_error(e) -> None:
    """click's usage error as one line naming the command's help (`chiquito` alone: the help itself)."""
    if type(e).__name__ == "NoArgsIsHelpError":  # `chiquito` or `chiquito CMD` alone: the help
        typer.echo(e.ctx.get_help(), err=True)
        return
    where = e.ctx.command_path if e.ctx else "chiquito"
    hint = ""
    if type(e).__name__ == "NoSuchOption" and any(a.startswith("-") and Path(a).exists() for a in sys.argv[1:]):
        hint = "; a file whose name starts with '-': put `--` before the file names"
    msg = " ".join(e.format_message().split()).rstrip(".")
    typer.echo(f"error: {msg}{hint}; see `{where} --help`", err=True)


def run():
    """Console entry point: set glibc's malloc thresholds (re-executing once), then run the app."""
    if sys.platform.startswith("linux") and not all(k in os.environ for k in _MALLOC_ENV):
        os.environ.update({k: os.environ.get(k, v) for k, v in _MALLOC_ENV.items()})
        try:
            os.execv(sys.executable, [sys.executable, "-m", "chiquito_or_not", *sys.argv[1:]])
        except OSError:
            pass  # cannot re-execute: run as we are, only slower
    # typer carries its own click: its usage error is BadParameter's base class
    usage_error = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")
    try:
        code = app(prog_name="chiquito", standalone_mode=False)
    except usage_error as e:  # a bad option or argument: one line, as every other error
        _say_usage_error(e)
        code = 2
    except typer.Abort:  # Ctrl-C at a prompt or while parsing
        typer.echo("error: interrupted", err=True)
        code = 130
    sys.exit(code if isinstance(code, int) else 0)
