"""Record what a refactor must not change, and compare two records.

Run: .venv/bin/python bench/record_outputs.py record OUT.json [--work DIR] [--jobs default,objects,tiny]
     .venv/bin/python bench/record_outputs.py compare BEFORE.json AFTER.json

`record` runs, through the `chiquito` command, in a fresh work folder: the default recipe
(recipes/face-or-not.toml), a small detection recipe with the objects recipe's code paths
(bench/record/tiny-objects.toml) and the tests' tiny recipe (bench/record/tiny.toml): dataset,
finetune, ONNX and TFLite export, `predict --json` with each exported model on the validation split,
and `review --list --json` on the default dataset. It keeps the sha256 of split.csv and manifest.csv,
metrics.json, export.json and every JSON output (paths relative to the work folder). `compare` says
whether two records are the same, apart from timings and the environment, and lists apart the floats
that differ only in their last bits (within 1e-12 relative); exit 1 when anything else differs.
"""

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
JOBS = {  # name → (recipe, run name, the exports whose predictions are recorded)
    "default": (ROOT / "recipes" / "face-or-not.toml", "face-or-not", ("onnx", "tflite")),
    "objects": (HERE / "record" / "tiny-objects.toml", "tiny-objects", ("onnx", "tflite")),
    "tiny": (HERE / "record" / "tiny.toml", "tiny", ()),
}
# keys whose values move from run to run by design: wall-clock times and the machine's description
VOLATILE = {"timings", "environment", "export_s", "convert_s", "seconds", "elapsed", "took"}


def _chiquito(work: Path, *args: str) -> str:
    exe = Path(sys.executable).with_name("chiquito")
    env = dict(os.environ, CHIQUITO_DATA=str(work / "datasets"), CHIQUITO_RUNS=str(work / "runs"))
    r = subprocess.run([str(exe), *args], cwd=work, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"chiquito {' '.join(args)} failed ({r.returncode}):\n{r.stderr[-3000:]}")
    return r.stdout


def _sha256(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _relative(obj, work: str):
    """`obj` with the work folder's path taken out of every string."""
    if isinstance(obj, dict):
        return {k: _relative(v, work) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_relative(v, work) for v in obj]
    return obj.replace(work + "/", "").replace(work, ".") if isinstance(obj, str) else obj


def record_job(work: Path, name: str) -> dict:
    recipe, run_name, exports = JOBS[name]
    data, run = Path("datasets") / run_name, Path("runs") / run_name
    _chiquito(work, "dataset", str(recipe))
    _chiquito(work, "finetune", str(recipe))
    out = {
        "split.csv": _sha256(work / data / "split.csv"),
        "manifest.csv": _sha256(work / data / "manifest.csv"),
        "metrics.json": json.loads((work / run / "metrics.json").read_text()),
    }
    models = ["model.pkl"]
    for fmt in exports:
        _chiquito(work, "export", str(run), "--format", fmt)
        models.append(f"model.{fmt}")
    if exports:
        out["export.json"] = json.loads((work / run / "export.json").read_text())
    for m in models:
        out[f"predict {m}"] = json.loads(_chiquito(work, "predict", str(run / m), str(data / "valid"), "--json"))
    if name == "default":
        out["review --list"] = json.loads(_chiquito(work, "review", str(recipe), "--list", "100000", "--json"))
    return _relative(out, str(work.resolve()))


def _volatile(key: str) -> bool:
    return key in VOLATILE or key.endswith(("_ms", "_seconds"))


def differences(a, b, where: str = "") -> list[str]:
    """Where `a` and `b` differ, apart from volatile keys."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            if _volatile(k):
                continue
            if k not in a or k not in b:
                out.append(f"{where}/{k}: only in {'after' if k in b else 'before'}")
            else:
                out += differences(a[k], b[k], f"{where}/{k}")
        return out
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{where}: {len(a)} items before, {len(b)} after"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f"{where}[{i}]")]
    return [] if a == b else [f"{where}: {json.dumps(a)[:120]} before, {json.dumps(b)[:120]} after"]


def rounding(a, b) -> float | None:
    """|a - b| when both are floats that differ only in the last bits (within 1e-12 relative), else None."""
    if isinstance(a, float) and isinstance(b, float) and abs(a - b) <= 1e-12 * max(1.0, abs(a)):
        return abs(a - b)
    return None


def split_rounding(a, b, where: str = "") -> tuple[list[str], list[tuple[str, float]]]:
    """(real differences, float differences in the last bits with their size), apart from volatile keys."""
    if isinstance(a, dict) and isinstance(b, dict) and set(a) == set(b):
        real, tiny = [], []
        for k in sorted(a):
            if not _volatile(k):
                r, t = split_rounding(a[k], b[k], f"{where}/{k}")
                real, tiny = real + r, tiny + t
        return real, tiny
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        real, tiny = [], []
        for i, (x, y) in enumerate(zip(a, b)):
            r, t = split_rounding(x, y, f"{where}[{i}]")
            real, tiny = real + r, tiny + t
        return real, tiny
    d = rounding(a, b)
    if d is not None and a != b:
        return [], [(where, d)]
    return differences(a, b, where), []


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    rec = sub.add_parser("record")
    rec.add_argument("out", type=Path)
    rec.add_argument("--work", type=Path, default=Path("/tmp/chiquito-record"))
    rec.add_argument("--jobs", default=",".join(JOBS))
    cmp_ = sub.add_parser("compare")
    cmp_.add_argument("before", type=Path)
    cmp_.add_argument("after", type=Path)
    a = ap.parse_args()
    if a.cmd == "compare":
        real, tiny = split_rounding(json.loads(a.before.read_text()), json.loads(a.after.read_text()))
        print("\n".join(real[:200]) if real else "identical (apart from timings and environment)")
        if tiny:
            where = sorted({w.split("[")[0] for w, _ in tiny})
            print(
                f"{len(tiny)} float(s) differ in the last bits (largest {max(d for _, d in tiny):.1e}), under: "
                + ", ".join(where[:12])
            )
        sys.exit(1 if real else 0)
    shutil.rmtree(a.work, ignore_errors=True)
    a.work.mkdir(parents=True)
    got = {}
    for name in a.jobs.split(","):  # written after each job: a failed job keeps the ones before it
        got[name] = record_job(a.work, name)
        a.out.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
        print(f"{name}: recorded", file=sys.stderr)
    shutil.rmtree(a.work, ignore_errors=True)


if __name__ == "__main__":
    main()
