"""The detector's parts on a backbone body: the body tapped at strides 16 and 32, the SSD head, loss, metric."""

from __future__ import annotations

from ...core.errors import RecipeError
from ...train.backbones import get_backbone
from .box_postprocess import POST_DEFAULTS

__all__ = ["adapt_body", "model_parts"]


def adapt_body(recipe, body):
    """The classification body as a TapBody (the same modules, two feature maps out)."""
    import torch.nn as nn

    from .ssd import TapBody

    if not isinstance(body, nn.Sequential):
        raise RecipeError(
            f"{recipe.path}: backbone {recipe.finetune.backbone!r} is not a sequence of blocks, so "
            "its stride-16 map cannot be tapped for detection; use efficientnet_lite0 (or lite1, "
            "lite2), a resnet, or a torchvision/... model"
        )
    from collections import OrderedDict

    return TapBody(OrderedDict(body.named_children()))


def model_parts(recipe, body, n_features: int, dls, root) -> tuple:
    """(SSDHead, SSDLoss, [mAP@0.5]) sized by probing the body at the recipe's input size."""
    import torch

    from .ssd import MapMetric, SSDHead, SSDLoss

    f, d = recipe.finetune, recipe.detect
    was = body.training
    body.eval()
    with torch.no_grad():
        feats = body(torch.zeros(1, 3, f.size, f.size))
    body.train(was)
    b = get_backbone(f.backbone)
    post = {**POST_DEFAULTS, "nms_iou": d.nms_iou, "detections_per_img": d.max_detections}
    head = SSDHead(
        [x.shape[1] for x in feats], [x.shape[-1] for x in feats], list(d.labels), f.size, b.mean, b.std, post
    )
    head.score_threshold = d.score_threshold
    return head, SSDLoss(head.anchors), [MapMetric()]
