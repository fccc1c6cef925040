"""The same recipe, seed, data and machine give the same model: two finetune runs in fresh processes,
the first with a cold feature cache and the second with a warm one, agree exactly."""

import json
import shutil
import subprocess
import sys

import pytest

from .helpers import subprocess_env

pytestmark = [pytest.mark.slow, pytest.mark.registry]


def _finetune(recipe_path, data, runs, hash_seed):
    r = subprocess.run(
        [sys.executable, "-m", "chiquito_or_not", "finetune", str(recipe_path)],
        capture_output=True,
        text=True,
        timeout=600,
        env=subprocess_env(CHIQUITO_DATA=str(data), CHIQUITO_RUNS=str(runs), PYTHONHASHSEED=str(hash_seed)),
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    return r.stdout


def _without_paths(m):
    if isinstance(m, dict):
        return {k: _without_paths(v) for k, v in m.items() if k not in ("model", "folder", "file")}
    if isinstance(m, list):
        return [_without_paths(v) for v in m]
    return m


def test_two_runs_give_the_same_metrics_and_weights(tiny_run, shared_roots, tmp_path):
    import torch
    from fastai.learner import load_learner

    recipe, _ = tiny_run
    data = tmp_path / "data"  # the tiny dataset without the feature cache tiny_run filled
    shutil.copytree(shared_roots[0] / recipe.name, data / recipe.name, symlinks=True)
    out_a = _finetune(recipe.path, data, tmp_path / "a", hash_seed=1)  # set and dict orders differ too
    assert (data / ".cache" / "features").is_dir()  # the first run filled the cache: the second reads it
    out_b = _finetune(recipe.path, data, tmp_path / "b", hash_seed=2)
    run_a, run_b = tmp_path / "a" / recipe.name, tmp_path / "b" / recipe.name
    assert out_a.count("head on cached body features") == out_b.count("head on cached body features") == 1

    m_a, m_b = (json.loads((r / "metrics.json").read_text()) for r in (run_a, run_b))
    assert _without_paths(m_a) == _without_paths(m_b)
    assert (run_a / "history.csv").read_text() == (run_b / "history.csv").read_text()
    assert json.loads((run_a / "lr_find.json").read_text()) == json.loads((run_b / "lr_find.json").read_text())
    w_a, w_b = (load_learner(r / "model.pkl", cpu=True).model.state_dict() for r in (run_a, run_b))
    assert list(w_a) == list(w_b)
    differ = [k for k in w_a if not torch.equal(w_a[k], w_b[k])]
    assert differ == []
    env = json.loads((run_a / "state.json").read_text())["environment"]
    assert env["torch"] == torch.__version__ and env["threads"] >= 1 and env["device"] == "cpu"


def test_seeds_report_mean_and_spread_and_the_recipe_seed_repeats_finetune(tiny_run, env_roots):
    from typer.testing import CliRunner

    from chiquito_or_not.cli import app

    recipe, plain = tiny_run
    r = CliRunner().invoke(app, ["finetune", recipe.path, "--seeds", "2"])
    assert r.exit_code == 0, r.output
    runs = env_roots[1]
    summary = json.loads((runs / recipe.name / "seeds.json").read_text())
    assert summary["seeds"] == [recipe.seed, recipe.seed + 1]
    rows = (runs / recipe.name / "seeds.csv").read_text().splitlines()
    assert rows[0].startswith("seed,valid_accuracy,valid_balanced_accuracy") and len(rows) == 3
    accs = [
        json.loads((runs / f"{recipe.name}--seed-{s}" / "metrics.json").read_text())["valid"]["accuracy"]
        for s in summary["seeds"]
    ]
    s = summary["summary"]["valid_accuracy"]
    assert s["mean"] == pytest.approx(sum(accs) / 2) and s["min"] == min(accs) and s["n"] == 2
    assert s["std"] == pytest.approx(abs(accs[0] - accs[1]) / 2**0.5)
    assert "valid_accuracy" in r.output and "±" in r.output
    # the recipe's own seed, in another run folder, repeats the plain finetune exactly
    same = json.loads((runs / f"{recipe.name}--seed-{recipe.seed}" / "metrics.json").read_text())
    assert _without_paths(same) == _without_paths(plain.metrics)
    r = CliRunner().invoke(app, ["finetune", recipe.path, "--seeds", "2", "--resume"])
    assert r.exit_code == 2 and "--resume continues one run" in r.output
