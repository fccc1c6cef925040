"""Any timm or torchvision model by name: bodies and layer groups from the real models (random weights,
offline), one-line errors, and a real run with a timm body exported and reloaded without this package."""

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from chiquito_or_not.core.backbone_table import backbone_name_problem
from chiquito_or_not.core.errors import ChiquitoError
from chiquito_or_not.train.backbones import body_splitter, create_body, get_backbone

from .helpers import predict_without_the_package, subprocess_env

SMALL = [
    "timm/mobilenetv3_small_050",
    "torchvision/mobilenet_v3_small",
    "torchvision/vgg11",
    "efficientnet_lite0",
    "resnet18",
    "simple_cnn",
]


@pytest.mark.parametrize("name", SMALL)
def test_layer_groups_come_from_the_real_model(name):
    from fastai.vision.all import create_head

    from chiquito_or_not.train.backbones import num_features

    body = create_body(name, "none")
    model = nn.Sequential(body, create_head(num_features(body), 2))
    groups = body_splitter(name, body)(model)
    ids = [[id(p) for p in g] for g in groups]
    assert len(groups) == 3 and all(ids)  # body start, body end, head: none empty
    flat = [i for g in ids for i in g]
    assert len(flat) == len(set(flat)) == len(list(model.parameters()))  # every parameter exactly once
    assert {id(p) for p in model[1].parameters()} == set(ids[2])
    assert model(torch.zeros(2, 3, 64, 64)).shape == (2, 2)


def test_names_aliases_and_normalisation():
    assert get_backbone("vgg16").arch == "vgg16" and get_backbone("vgg16").family == "torchvision"
    assert get_backbone("inception_resnet_v2").family == "timm"
    assert get_backbone("timm/inception_resnet_v2").mean == (0.5, 0.5, 0.5)  # its own pretrained config
    assert get_backbone("timm/convnext_tiny").mean == (0.485, 0.456, 0.406)
    assert backbone_name_problem("timm/anything_goes_here") == ""  # checked against timm when built
    assert "did you mean 'resnet34'" in backbone_name_problem("resnet43")
    with pytest.raises(ChiquitoError, match="timm has no model 'convnext_tinyy'; did you mean timm/convnext_tiny"):
        get_backbone("timm/convnext_tinyy")
    with pytest.raises(ChiquitoError, match="torchvision has no model"):
        get_backbone("torchvision/vgg17")


@pytest.mark.slow  # a fresh process importing torch and timm: about 10 s
def test_missing_weights_offline_are_one_line(tmp_path):
    """Default sources that cannot be reached: the hub (pointed at a closed loopback port, empty cache)
    and a torchvision URL on a closed port. One line naming where the file was expected."""
    script = (
        "import json, sys\nfrom chiquito_or_not.train.backbones import create_body\n"
        "from chiquito_or_not.core.errors import ChiquitoError\n"
        "for name, weights in json.loads(sys.argv[1]):\n"
        "    try:\n        create_body(name, weights)\n        print('LOADED', name)\n"
        "    except ChiquitoError as e:\n        print('ERR', e)\n"
    )
    env = subprocess_env(
        HF_ENDPOINT="http://127.0.0.1:9", HF_HOME=str(tmp_path / "hf"), TORCH_HOME=str(tmp_path / "torch")
    )
    cases = [
        ("timm/mobilenetv3_small_050", "", "Hugging Face cache"),
        ("torchvision/vgg11", "http://127.0.0.1:9/vgg11-8a719046.pth", "download from"),
        ("timm/mobilenetv3_small_050", str(tmp_path / "no.pth"), "does not exist"),
    ]
    out = subprocess.run(
        [sys.executable, "-c", script, json.dumps([c[:2] for c in cases])],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith(("ERR", "LOADED"))]  # not torch.hub's chatter
    assert len(lines) == len(cases) and "Traceback" not in out.stderr, (out.stdout, out.stderr)
    for line, (_, _, words) in zip(lines, cases):
        assert line.startswith("ERR") and words in line, line


@pytest.mark.slow
def test_a_timm_body_trains_exports_and_reloads_without_the_package(tiny_run, env_roots, tmp_path, monkeypatch):
    from chiquito_or_not.stages.finetune import finetune
    from chiquito_or_not.tasks.classify.class_inference import predict_images

    recipe, _ = tiny_run
    monkeypatch.setenv("CHIQUITO_RUNS", str(tmp_path / "runs"))
    f = recipe.finetune
    r = replace(
        recipe,
        name="tiny-timm",
        finetune=replace(
            f,
            backbone="timm/mobilenetv3_small_050",
            weights="none",
            lr_find=False,
            unfrozen=replace(f.unfrozen, keep_frozen=0.5),
            augmented=replace(f.augmented, lr=1e-2),
        ),
    )
    res = finetune(r, log=lambda *_: None, data_root=env_roots[0] / recipe.name)
    assert len(res.learn.opt.param_groups) == 3 and res.metrics["valid"]["counts"]["n"] > 0
    valid = sorted((env_roots[0] / recipe.name / "valid").rglob("*.jpg"))
    from PIL import Image

    expected = predict_images(res.learn, [Image.open(p).convert("RGB") for p in valid]).numpy()
    _, probs = predict_without_the_package(res.run / "model.pkl", valid, tmp_path)
    np.testing.assert_allclose(probs, expected, atol=1e-5)
    assert Path(res.run / "model.pkl").stat().st_size > 1_000_000
