"""`chiquito predict MODEL PHOTOS --ray ADDRESS --out FILE.jsonl`: the same predictions over a Ray cluster
with Ray Data. Workers read the files in parallel and run an exported model (.onnx on onnxruntime, .tflite
in LiteRT: no torch in the workers); the driver streams their JSON lines into the file as they come, and a
rerun skips what the file already answers, exactly as the single-process `--out`.

On a real cluster every node needs this package installed and the model and the photos at the same path
(a shared or network filesystem)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..core.errors import ChiquitoError
from ..core.files import ends_with_newline
from ..core.task_registry import task_of_model
from .predict import done_in_jsonl

__all__ = ["RAY_FORMATS", "predict_ray", "ray_available"]

RAY_FORMATS = (".onnx", ".tflite")


def ray_available() -> None:
    try:
        import ray  # noqa: F401
        import ray.data  # noqa: F401
    except ImportError:
        raise ChiquitoError("predict --ray needs Ray Data: pip install 'chiquito-or-not[ray]'") from None


class _Predictor:
    """One Ray actor: loads the model once, then answers batches of paths with their JSON lines."""

    def __init__(self, model: str, bs: int, threshold, top_k: int):
        from ..core.model_loader import load_model

        self.model = load_model(model, threads=1)
        self.task = task_of_model(self.model)
        self.bs, self.threshold, self.top_k = bs, threshold, top_k

    def __call__(self, batch: dict) -> dict:
        paths = [Path(str(p)) for p in batch["file"]]
        results = self.task.inference.predict_files(self.model, paths, bs=self.bs, workers=1, threshold=self.threshold)
        for r, shown in zip(results, batch["path"]):
            r.path = str(shown)  # the path as the user gave it, as a single process writes it
        return {
            "line": [json.dumps(r.to_json(self.top_k)) for r in results],
            "failed": [bool(r.error) for r in results],
        }


def _offer_token(address: str) -> None:
    """A cluster started by `ray start` asks for its token (Ray >= 2.52), and Ray sends one to an explicit
    address only when RAY_AUTH_MODE=token is set before it is imported: a token this machine holds
    (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token) is offered."""
    if address == "local" or "RAY_AUTH_MODE" in os.environ:
        return
    token_file = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
    if os.environ.get("RAY_AUTH_TOKEN") or token_file.is_file():
        os.environ["RAY_AUTH_MODE"] = "token"


def _connect(address: str, workers: int):
    import ray

    if ray.is_initialized():
        return
    kw = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
    if address == "local":  # a cluster of this machine alone, started for this command and stopped after
        ray.init(num_cpus=workers, _node_ip_address="127.0.0.1", **kw)
    else:
        try:
            ray.init(address=address, **kw)
        except (ConnectionError, ValueError, RuntimeError) as e:
            raise ChiquitoError(
                f"--ray {address}: cannot join that Ray cluster ({str(e).splitlines()[0][:160]}); start one with "
                "`ray start --head` and pass its address (host:6379, ray://host:10001, auto) or `local`; a cluster "
                "with token authentication needs its token in RAY_AUTH_TOKEN or ~/.ray/auth_token"
            ) from None


def predict_ray(
    model: Path,
    paths: list[Path],
    out: Path,
    address: str = "local",
    workers: int = 0,
    bs: int = 64,
    threshold: float | None = None,
    top_k: int = 1,
) -> dict:
    """Predict `paths` with the exported `model` on the Ray cluster at `address` ("local": one started on
    this machine with `workers` CPUs; "auto", "host:port", "ray://host:10001": an existing one) into the
    JSON-lines `out`, skipping what it already answers. `workers`: how many model actors (0: one per CPU of
    the cluster). Same counts as predict_to_jsonl."""
    model = Path(model)
    if model.suffix.lower() not in RAY_FORMATS:
        raise ChiquitoError(
            f"--ray runs an exported model (.onnx or .tflite: no torch, no pickle in the workers), not {model.name}; "
            "make one with `chiquito export RUN` (or --format tflite)"
        )
    if not model.is_file():
        raise ChiquitoError(f"{model}: no such model file; make one with `chiquito export RUN`")
    _offer_token(address)
    ray_available()
    import logging

    import ray
    import ray.data

    for name in ("ray", "ray.data"):  # its progress lines would drown the command's own
        logging.getLogger(name).setLevel(logging.WARNING)
    out = Path(out)
    done = done_in_jsonl(out)
    # workers open the absolute path (their working folder is not this one); the lines name the given one
    todo = [{"path": str(p), "file": str(p.resolve())} for p in paths if str(p) not in done]
    counts = {"done": len(paths) - len(todo), "predicted": 0, "failed": 0}
    if not todo:
        return counts
    started_here = address == "local" and not ray.is_initialized()
    _connect(address, workers or (os.cpu_count() or 1))
    try:
        n_actors = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        ctx = ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = True  # lines in the order of the files, as one process writes
        ctx.enable_progress_bars = False
        per_block = max(1, min(bs, -(-len(todo) // n_actors)))
        ds = ray.data.from_items(todo, override_num_blocks=-(-len(todo) // per_block))
        ds = ds.map_batches(
            _Predictor,
            compute=ray.data.ActorPoolStrategy(size=n_actors),
            fn_constructor_kwargs={"model": str(model.resolve()), "bs": bs, "threshold": threshold, "top_k": top_k},
            batch_size=per_block,
            batch_format="numpy",
            num_cpus=1,
        )
        out.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(out, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            if not ends_with_newline(out):
                os.write(fd, b"\n")  # a torn last line stays on its own line
            for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                os.write(fd, "".join(str(line) + "\n" for line in batch["line"]).encode("utf-8"))
                os.fsync(fd)
                failed = int(batch["failed"].sum())
                counts["failed"] += failed
                counts["predicted"] += len(batch["line"]) - failed
        finally:
            os.close(fd)
    finally:
        if started_here:
            ray.shutdown()
    return counts
