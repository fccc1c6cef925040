"""Training in several processes: `torchrun --nproc_per_node 2 -m chiquito_or_not finetune` on CPU
processes (gloo) trains the tiny recipe through fastai's DDP path, with one voice and one writer, and
`accelerate launch --multi_gpu --num_processes 2` gives the same run again."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from .helpers import TINY_RECIPE, subprocess_env, write_recipe

pytest.importorskip("accelerate", reason="needs the distributed extra: pip install 'chiquito-or-not[distributed]'")


def _torchrun(recipe, env, launcher: str = "torchrun") -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    if launcher == "accelerate":  # its --multi_gpu launcher is torchrun's; on a CPU our trainer asks for gloo
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
        cmd += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    return subprocess.run(
        [*cmd, "-m", "chiquito_or_not", "finetune", str(recipe)], capture_output=True, text=True, env=env, timeout=600
    )


def test_two_cpu_processes_train_the_tiny_recipe_as_one_run(tiny_run, shared_roots, tmp_path):
    from chiquito_or_not.core.recipe import load_recipe
    from chiquito_or_not.stages.dataset import build_dataset

    if not shutil.which("npm"):
        pytest.skip("needs npm for the tiny recipe's data")
    data, _ = shared_roots
    runs = tmp_path / "runs"
    recipe = write_recipe(tmp_path, TINY_RECIPE.format(name="tiny-ddp", aug_cycles=1), "tiny-ddp.toml")
    env = subprocess_env(CHIQUITO_DATA=str(data), CHIQUITO_RUNS=str(runs))
    mp = pytest.MonkeyPatch()
    mp.setenv("CHIQUITO_DATA", str(data))
    try:
        build_dataset(load_recipe(recipe), log=lambda *_: None)  # the tiny run's images, split the same way
    finally:
        mp.undo()

    first = _torchrun(recipe, env)
    assert first.returncode == 0, first.stderr[-3000:]
    out = first.stdout
    assert "2 processes" in out
    # one voice: the command's lines and each epoch's line once, not once per process
    assert out.count("finetune tiny-ddp\n") == 1
    for stage in ("frozen", "augmented", "unfrozen"):
        assert sum(line.strip().startswith(f"{stage} ") and "epoch 1/1" in line for line in out.splitlines()) == 1
    # one writer: the finished run and nothing else (no half-written folder, no second copy)
    assert sorted(p.name for p in runs.iterdir()) == ["tiny-ddp"]
    run = runs / "tiny-ddp"
    for name in ("model.pkl", "metrics.json", "history.csv", "lr_find.json", "state.json"):
        assert (run / name).is_file(), name
    history = (run / "history.csv").read_text()
    metrics = json.loads((run / "metrics.json").read_text())
    lr = json.loads((run / "lr_find.json").read_text())

    # the rate was chosen once, by the first process on all the training batches, and the stage that asks
    # for "auto" trained at it (both processes: a different rate would make their DDP steps differ)
    assert f"use {lr['chosen']:.1e}" in out
    assert f"x1, lr {lr['chosen']:.1e}" in out

    # the model learned: at least the single-process accuracy's lower bound, on the same valid split
    single = tiny_run[1].metrics["valid"]
    ddp = metrics["valid"]
    assert len(ddp["outcomes"]) == len(single["outcomes"]) == 27
    assert ddp["accuracy"] >= single["accuracy_ci95"][0], (ddp["accuracy"], single["accuracy_ci95"])
    assert single["accuracy"] >= ddp["accuracy_ci95"][0], (single["accuracy"], ddp["accuracy_ci95"])

    # the same seed gives the same run again, number for number, launched by accelerate this time
    second = _torchrun(recipe, env, "accelerate")
    assert second.returncode == 0, second.stderr[-3000:]
    assert "2 processes" in second.stdout and second.stdout.count("finetune tiny-ddp\n") == 1
    assert (run / "history.csv").read_text() == history
    assert json.loads((run / "metrics.json").read_text())["valid"] == metrics["valid"]
