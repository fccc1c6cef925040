"""Functions that travel inside an exported learner (pickled by value: loading needs only torch/fastai)."""

import torch.nn as nn

__all__ = ["three_groups", "TimmBody", "timm_groups"]


def three_groups(model: nn.Module, cut: int) -> list:
    """Parameters in three layer groups: body[:cut], body[cut:], head, for discriminative learning rates."""
    body, head = model[0], model[1]
    return [list(body[:cut].parameters()), list(body[cut:].parameters()), list(head.parameters())]


class TimmBody(nn.Module):
    """Any timm model as a body: its forward_features (the feature map before pooling), with its
    parameters' names in the order timm's group_matcher gives (`groups`); the first `cut` groups are
    layer group 0."""

    def __init__(self, model: nn.Module, groups: list, cut: int):
        super().__init__()
        self.model, self.groups, self.cut = model, groups, cut

    def forward(self, x):
        return self.model.forward_features(x)


def timm_groups(model: nn.Module) -> list:
    """Three layer groups for a TimmBody: its first `cut` groups, the rest, the head."""
    body, head = model[0], model[1]
    params = dict(body.model.named_parameters())
    early = {n for g in body.groups[: body.cut] for n in g}
    return [
        [p for n, p in params.items() if n in early],
        [p for n, p in params.items() if n not in early],
        list(head.parameters()),
    ]
