"""The classifier's head, loss and metric on top of any backbone body."""

from __future__ import annotations

from ...train.backbones import get_backbone

__all__ = ["model_parts"]


def model_parts(recipe, body, n_features: int, n_classes: int, weights: list[float] | None = None) -> tuple:
    """(head, loss_func, metrics): fastai's head (or the tutorial's dense head), cross-entropy with
    optional class weights, accuracy."""
    import torch
    import torch.nn as nn
    from fastai.vision.all import CrossEntropyLossFlat, accuracy, apply_init, create_head

    if get_backbone(recipe.finetune.backbone).head == "dense":  # flatten a 4x4 map, Dense(512), ReLU, dropout
        head = nn.Sequential(
            nn.AdaptiveMaxPool2d(4),
            nn.Flatten(),
            nn.Linear(n_features * 16, 512),
            nn.ReLU(inplace=True),
            nn.Dropout(0.5),
            nn.Linear(512, n_classes),
        )
    else:
        head = create_head(n_features, n_classes)
    apply_init(head, nn.init.kaiming_normal_)
    loss = CrossEntropyLossFlat(weight=torch.tensor(weights, dtype=torch.float32) if weights else None)
    return head, loss, [accuracy]
