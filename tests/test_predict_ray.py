"""`chiquito predict MODEL.onnx PHOTOS --ray ADDRESS --out FILE.jsonl` on a real Ray cluster of two worker
CPUs started on this machine with `ray start --head` (token authentication on, as Ray starts it), against
the single-process `--out` on the same files."""

from __future__ import annotations

import json
import secrets
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from .helpers import subprocess_env

pytest.importorskip("ray", reason="needs the ray extra: pip install 'chiquito-or-not[ray]'")
pytest.importorskip("onnxruntime", reason="needs onnxruntime")

RAY = str(Path(sys.executable).with_name("ray"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def onnx_model(tiny_run, tmp_path_factory):
    from chiquito_or_not.stages.export import export_onnx

    out = tmp_path_factory.mktemp("ray-onnx") / "model.onnx"
    export_onnx(tiny_run[1].run, out=out, log=lambda *_: None)
    return out


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A head node with 2 CPUs (two worker processes for the model), its own token; stopped after."""
    port = _free_port()
    env = subprocess_env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(16), RAY_USAGE_STATS_ENABLED="0")
    cmd = [RAY, "start", "--head", "--port", str(port), "--num-cpus", "2", "--include-dashboard", "false"]
    cmd += ["--object-store-memory", str(200 * 2**20), "--disable-usage-stats"]
    started = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert started.returncode == 0, started.stderr[-2000:]
    try:
        yield f"127.0.0.1:{port}", env
    finally:
        subprocess.run([RAY, "stop", "--force"], env=env, capture_output=True, timeout=120)


def _chiquito(args, env) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "chiquito_or_not", "predict", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def _lines(p: Path) -> dict:
    return {r["path"]: r for r in map(json.loads, p.read_text().splitlines())}


def test_a_ray_cluster_writes_the_single_process_lines_and_a_rerun_skips_them(
    onnx_model, cluster, shared_roots, tmp_path
):
    address, env = cluster
    data, _ = shared_roots
    photos = tmp_path / "photos"
    shutil.copytree(data / "tiny" / "valid", photos)
    (photos / "not_face" / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    n = sum(1 for p in photos.rglob("*") if p.is_file())

    one = _chiquito([onnx_model, photos, "--out", tmp_path / "one.jsonl"], env)
    assert one.returncode == 1, one.stderr[-2000:]  # the broken file fails in both, and only it
    ray_out = tmp_path / "ray.jsonl"
    first = _chiquito([onnx_model, photos, "--out", ray_out, "--ray", address, "--ray-workers", "2"], env)
    assert first.returncode == 1, first.stderr[-3000:]
    assert f"{n - 1} predicted now, 1 failed" in first.stderr

    single, spread = _lines(tmp_path / "one.jsonl"), _lines(ray_out)
    assert len(spread) == n == len(single)
    assert spread == single  # the same answers, path for path (labels, probabilities, the one error)
    assert "error" in spread[str(photos / "not_face" / "broken.jpg")]
    # the lines come in the order of the files, as one process writes them
    assert ray_out.read_text() == (tmp_path / "one.jsonl").read_text()

    # a rerun asks the cluster only for what the file lacks: the broken file, which fails again
    again = _chiquito([onnx_model, photos, "--out", ray_out, "--ray", address], env)
    assert f"0 predicted now, 1 failed (the error is in their line; a rerun tries them again), {n - 1} already" in (
        again.stderr
    )
    assert len(ray_out.read_text().splitlines()) == n + 1


def test_the_workers_predict_without_torch(onnx_model, cluster, shared_roots):
    """In a worker of the cluster: load the .onnx model and predict a batch; torch is never imported."""
    address, env = cluster
    data, _ = shared_roots
    files = sorted(str(p) for p in (data / "tiny" / "valid").rglob("*.jpg"))[:5]
    probe = f"""
import json, sys, ray
ray.init(address={address!r}, log_to_driver=False, configure_logging=False)

@ray.remote(num_cpus=1)
def work(model, files):
    import sys
    import numpy as np
    from chiquito_or_not.stages.predict_ray import _Predictor
    out = _Predictor(model, 8, None, 1)({{"path": np.array(files), "file": np.array(files)}})
    return [json.loads(x)["label"] for x in out["line"]], "torch" in sys.modules

print(json.dumps(ray.get(work.remote({str(onnx_model)!r}, {files!r}))))
"""
    r = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-2000:]
    labels, torch_loaded = json.loads(r.stdout.strip().splitlines()[-1])
    assert len(labels) == 5 and set(labels) <= {"face", "not_face"}
    assert torch_loaded is False


def test_ray_refuses_a_pickle_and_a_missing_extra_in_one_line(tmp_path, monkeypatch):
    from chiquito_or_not.core.errors import ChiquitoError
    from chiquito_or_not.stages.predict_ray import predict_ray

    pkl = tmp_path / "model.pkl"
    pkl.write_bytes(b"not run")
    with pytest.raises(ChiquitoError, match=r"--ray runs an exported model \(\.onnx or \.tflite"):
        predict_ray(pkl, [pkl], tmp_path / "o.jsonl")
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"x")
    monkeypatch.setitem(sys.modules, "ray", None)  # as if the extra were not installed
    with pytest.raises(ChiquitoError, match=r"pip install 'chiquito-or-not\[ray\]'"):
        predict_ray(onnx, [onnx], tmp_path / "o.jsonl")
    assert not (tmp_path / "o.jsonl").exists()


def test_ray_without_out_is_refused(tmp_path):
    r = _chiquito([tmp_path / "m.onnx", tmp_path, "--ray", "local"], subprocess_env())
    assert r.returncode != 0
    assert "--ray streams the answers into a file: add --out FILE.jsonl" in r.stderr


def test_a_path_given_as_the_ray_address_is_refused_in_one_line(tmp_path):
    """`--ray PHOTOS/` reads the folder as the cluster's address: one line says so before anything starts."""
    out = ["--out", str(tmp_path / "o.jsonl")]
    r = _chiquito([tmp_path / "model.onnx", tmp_path, *out, "--ray", tmp_path], subprocess_env())
    assert r.returncode == 2 and "a file or folder, not a cluster address" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "o.jsonl").exists()
