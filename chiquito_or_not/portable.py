"""Functions that travel inside an exported learner (pickled by value: loading needs only torch/fastai)."""

import torch.nn as nn

__all__ = ["three_groups"]


def three_groups(model: nn.Module, cut: int) -> list:
    """Parameters in three layer groups: body[:cut], body[cut:], head, for discriminative learning rates."""
    body, head = model[0], model[1]
    return [list(body[:cut].parameters()), list(body[cut:].parameters()), list(head.parameters())]
