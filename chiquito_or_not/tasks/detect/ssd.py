"""The detector: an SSD with torchvision's SSDLite head on any Sequential body, its loss, its box decoding
and a per-epoch mAP metric. Plain tensor ops throughout, so body + head + decoding export as one graph
(a whole torchvision detector, with NMS inside, does not export).

A detector's model.pkl refers to these classes by name: loading it needs chiquito_or_not installed
(its .onnx export needs only onnxruntime and numpy).
"""

import math
from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F
from fastai.learner import Metric

from .box_postprocess import mean_average_precision, postprocess

__all__ = ["TapBody", "SSDHead", "SSDLoss", "Decoded", "decode_boxes", "MapMetric", "EXTRA_CHANNELS"]

EXTRA_CHANNELS = (512, 256, 256, 128)  # torchvision's SSDLite extra layers
BOX_WEIGHTS = (10.0, 10.0, 5.0, 5.0)  # torchvision SSD's box coder
BBOX_CLIP = math.log(1000.0 / 16)


class TapBody(nn.Sequential):
    """The same blocks as the classification body; forward returns its last stride-16 map and its last
    map (stride 32), the two SSD feature levels (only the last when the body never reaches stride 32)."""

    def forward(self, x):
        size, tap = x.shape[-1], None
        for m in self:
            x = m(x)
            if size // x.shape[-1] == 16:
                tap = x
        return [x] if tap is None or size // x.shape[-1] < 32 else [tap, x]


def _extra(cin: int, cout: int, norm) -> nn.Sequential:
    mid = cout // 2  # torchvision ssdlite._extra_block: 1x1 down, depthwise 3x3 stride 2, 1x1 up
    return nn.Sequential(
        nn.Conv2d(cin, mid, 1, bias=False),
        norm(mid),
        nn.ReLU6(inplace=True),
        nn.Conv2d(mid, mid, 3, stride=2, padding=1, groups=mid, bias=False),
        norm(mid),
        nn.ReLU6(inplace=True),
        nn.Conv2d(mid, cout, 1, bias=False),
        norm(cout),
        nn.ReLU6(inplace=True),
    )


class SSDHead(nn.Module):
    """Extra layers after the body's last map, torchvision's SSDLiteHead over every level, and the default
    boxes for `size` x `size` inputs (a buffer). Output: N x anchors x (4 box deltas + 1 + C class logits).
    Carries what a user of the model needs: labels, input size, normalisation, post-processing."""

    def __init__(self, channels: list, map_sizes: list, labels: list, size: int, mean, std, post: dict):
        super().__init__()
        from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
        from torchvision.models.detection.image_list import ImageList
        from torchvision.models.detection.ssdlite import SSDLiteHead, _normal_init

        norm = partial(nn.BatchNorm2d, eps=0.001, momentum=0.03)
        self.extras = nn.ModuleList()
        cin = channels[-1]
        for cout in EXTRA_CHANNELS:
            self.extras.append(_extra(cin, cout, norm))
            cin = cout
        all_channels = [*channels, *EXTRA_CHANNELS]
        gen = DefaultBoxGenerator([[2, 3] for _ in all_channels], min_ratio=0.2, max_ratio=0.95)
        self.head = SSDLiteHead(all_channels, gen.num_anchors_per_location(), len(labels) + 1, norm)
        for m in self.extras:
            _normal_init(m)
        sizes = list(map_sizes)
        for _ in EXTRA_CHANNELS:
            sizes.append(((sizes[-1] - 1) // 2 + 1))
        fmaps = [torch.zeros(1, 1, s, s) for s in sizes]
        anchors = gen(ImageList(torch.zeros(1, 3, size, size), [(size, size)]), fmaps)[0]
        self.register_buffer("anchors", anchors.float(), persistent=True)
        self.labels, self.size, self.mean, self.std = list(labels), int(size), list(mean), list(std)
        self.post = dict(post)

    def forward(self, feats):
        feats = list(feats)
        x = feats[-1]
        for e in self.extras:
            x = e(x)
            feats.append(x)
        out = self.head(feats)
        return torch.cat([out["bbox_regression"], out["cls_logits"]], dim=2)

    def decode(self, out):
        """This head's raw output → (boxes N x A x 4 in input pixels, scores N x A x C without background)."""
        return decode_boxes(out[..., :4], self.anchors, self.size), torch.softmax(out[..., 4:], dim=-1)[..., 1:]


def decode_boxes(deltas, anchors, size: int):
    """SSD box decoding (torchvision's BoxCoder, weights 10, 10, 5, 5) in plain tensor ops, clipped to the
    input square: N x A x 4 deltas → N x A x 4 boxes (x0 y0 x1 y1, input pixels)."""
    wa, ha = anchors[:, 2] - anchors[:, 0], anchors[:, 3] - anchors[:, 1]
    cxa, cya = anchors[:, 0] + 0.5 * wa, anchors[:, 1] + 0.5 * ha
    dx, dy = deltas[..., 0] / BOX_WEIGHTS[0], deltas[..., 1] / BOX_WEIGHTS[1]
    dw = torch.clamp(deltas[..., 2] / BOX_WEIGHTS[2], max=BBOX_CLIP)
    dh = torch.clamp(deltas[..., 3] / BOX_WEIGHTS[3], max=BBOX_CLIP)
    cx, cy = dx * wa + cxa, dy * ha + cya
    w, h = torch.exp(dw) * wa, torch.exp(dh) * ha
    boxes = torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], dim=-1)
    return boxes.clamp(0, size)


def _encode(gt, anchors):
    """The inverse of decode_boxes for matched pairs (M x 4 each) → M x 4 regression targets."""
    wa, ha = anchors[:, 2] - anchors[:, 0], anchors[:, 3] - anchors[:, 1]
    cxa, cya = anchors[:, 0] + 0.5 * wa, anchors[:, 1] + 0.5 * ha
    w, h = gt[:, 2] - gt[:, 0], gt[:, 3] - gt[:, 1]
    cx, cy = gt[:, 0] + 0.5 * w, gt[:, 1] + 0.5 * h
    return torch.stack(
        [
            BOX_WEIGHTS[0] * (cx - cxa) / wa,
            BOX_WEIGHTS[1] * (cy - cya) / ha,
            BOX_WEIGHTS[2] * torch.log(w / wa),
            BOX_WEIGHTS[3] * torch.log(h / ha),
        ],
        dim=1,
    )


class Decoded(nn.Module):
    """A trained SSD (body + SSDHead) with its decoding: input N x 3 x S x S → (boxes N x A x 4 in input
    pixels, scores N x A x C class probabilities without the background). What ONNX export traces and
    what PyTorch inference runs."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model[1].decode(self.model(x))


def _match(gt, anchors, iou_thresh: float = 0.5):
    """Index of the matched box per anchor (-1: background): IoU >= 0.5, plus each box's best anchor
    (torchvision's Matcher with allow_low_quality_matches)."""
    from torchvision.ops import box_iou

    if gt.shape[0] == 0:
        return torch.full((anchors.shape[0],), -1, dtype=torch.long, device=anchors.device)
    iou = box_iou(gt, anchors)  # G x A
    best, idx = iou.max(dim=0)
    idx = torch.where(best >= iou_thresh, idx, torch.full_like(idx, -1))
    top = iou.max(dim=1).values  # each box's best IoU; every anchor reaching it is a match
    g, a = torch.nonzero(iou == top[:, None], as_tuple=True)
    idx[a] = g
    return idx


class SSDLoss(nn.Module):
    """torchvision's SSD loss: smooth L1 on the matched anchors' box deltas, cross-entropy with hard
    negative mining (3 negatives per positive, at least `min_negatives` per image so background-only
    images teach too), both divided by the number of positives. Targets: N x M x 5 rows
    (class index 0..C-1, x0, y0, x1, y1 in input pixels), class -1 for padding."""

    def __init__(self, anchors, neg_ratio: int = 3, min_negatives: int = 8):
        super().__init__()
        self.register_buffer("anchors", anchors.detach().clone(), persistent=False)
        self.neg_ratio, self.min_negatives = neg_ratio, min_negatives

    def forward(self, pred, targets):
        anchors = self.anchors.to(pred.device)
        deltas, logits = pred[..., :4].float(), pred[..., 4:].float()
        n, a = deltas.shape[:2]
        cls_t = torch.zeros((n, a), dtype=torch.long, device=pred.device)
        box_loss, n_pos = deltas.new_zeros(()), 0
        for i in range(n):
            t = targets[i][targets[i][:, 0] >= 0]
            m = _match(t[:, 1:], anchors)
            fg = m >= 0
            if fg.any():
                tgt = _encode(t[m[fg], 1:], anchors[fg])
                box_loss = box_loss + F.smooth_l1_loss(deltas[i][fg], tgt, reduction="sum")
                cls_t[i, fg] = t[m[fg], 0].long() + 1
                n_pos += int(fg.sum())
        ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), cls_t.reshape(-1), reduction="none").view(n, a)
        pos = cls_t > 0
        neg_ce = ce.clone()
        neg_ce[pos] = -float("inf")
        k = torch.clamp(pos.sum(1) * self.neg_ratio, min=self.min_negatives)
        order = neg_ce.sort(dim=1, descending=True).indices
        rank = order.sort(dim=1).indices
        neg = rank < k[:, None]
        return (box_loss + ce[pos].sum() + ce[neg].sum()) / max(1, n_pos)


class MapMetric(Metric):
    """mAP@0.5 of the validation set at the end of each epoch (torchmetrics, COCO's rules), as a fastai
    metric: history.csv's column `map_50`."""

    @property
    def name(self):
        return "map_50"

    def reset(self):
        self.preds, self.targets = [], []

    def accumulate(self, learn):
        head = learn.model[1]
        boxes, scores = (t.cpu().numpy() for t in head.decode(learn.pred.detach().float()))
        for b, s, t in zip(boxes, scores, learn.yb[0].cpu()):
            pb, ps, pc = postprocess(b, s, **head.post)
            self.preds.append(
                {
                    "boxes": torch.from_numpy(pb).float(),
                    "scores": torch.from_numpy(ps).float(),
                    "labels": torch.from_numpy(pc),
                }
            )
            t = t[t[:, 0] >= 0]
            self.targets.append({"boxes": t[:, 1:].float(), "labels": t[:, 0].long()})

    @property
    def value(self):
        if not self.preds:
            return None
        m = mean_average_precision(iou_thresholds=[0.5])
        m.update(self.preds, self.targets)
        return float(m.compute()["map_50"])
