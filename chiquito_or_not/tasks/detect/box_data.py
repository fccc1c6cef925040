"""Detection data for training: a split folder (images + COCO annotations.json) as a dataset of
(image tensor, boxes), box-aware augmentation with torchvision.transforms.v2, fastai DataLoaders."""

from __future__ import annotations

from pathlib import Path

import torch

from ...core.errors import DataError
from ...core.layout import DatasetFolder
from ...data.dedup import unit_hash
from ...train.backbones import get_backbone
from .box_postprocess import preprocess, require_detect_extra
from .box_splits import SPLIT_ANNOTATIONS, read_split

__all__ = ["DetSet", "collate", "make_dls", "check_dataset", "memorise_dls", "augmentation"]


def _root(recipe, root) -> Path:
    """The dataset folder the caller resolved (core.paths.Roots.dataset): a task never guesses it."""
    if root is None:
        raise TypeError(f"{recipe.name}: the dataset folder must be given (Roots.dataset(name))")
    return Path(root)


def augmentation(a, size: int, mean):
    """torchvision v2 transforms that move the boxes with the pixels: colour, zoom out, an IoU-aware crop
    (no box cut to nothing), a horizontal flip, the resize to the input square, then boxes too small dropped."""
    from torchvision.transforms import v2

    fill = tuple(int(round(255 * m)) for m in mean)
    t = []
    if a.max_lighting > 0:
        t.append(v2.ColorJitter(brightness=a.max_lighting, contrast=a.max_lighting, saturation=a.max_lighting))
    if a.max_zoom > 1:
        t.append(v2.RandomApply([v2.RandomZoomOut(fill=fill, side_range=(1.0, a.max_zoom))], p=0.5))
        t.append(v2.RandomApply([v2.RandomIoUCrop(min_scale=1 / a.max_zoom**2, max_scale=1.0)], p=0.5))
    if a.flip:
        t.append(v2.RandomHorizontalFlip())
    if a.max_rotate > 0:
        t.append(v2.RandomApply([v2.RandomAffine(degrees=a.max_rotate, fill=fill)], p=0.3))
    t += [v2.Resize((size, size), antialias=True), v2.ClampBoundingBoxes(), v2.SanitizeBoundingBoxes(min_size=2)]
    return v2.Compose(t)


class DetSet(torch.utils.data.Dataset):
    """Images and their boxes ([label, x0, y0, x1, y1] in image pixels) → (3 x S x S normalised tensor,
    M x 5 tensor of [class index, x0, y0, x1, y1] in input pixels)."""

    def __init__(self, paths, boxes, labels, size, mean, std, augment=None, mosaic: float = 0.0):
        self.paths, self.boxes, self.vocab = list(paths), list(boxes), list(labels)
        self.size, self.mean, self.std, self.augment = size, list(mean), list(std), augment
        self.mosaic = mosaic if augment is not None else 0.0  # never on validation

    def __len__(self):
        return len(self.paths)

    def new_empty(self):
        return DetSet([], [], self.vocab, self.size, self.mean, self.std)

    def __getitem__(self, i):
        if self.mosaic and len(self) > 1 and float(torch.rand(())) < self.mosaic:
            return self._mosaic(i)
        return self._one(i)

    def _mosaic(self, i):
        """Image i and three others drawn at random, each augmented on its own, at half size in the four
        quadrants of one input square; their boxes scaled and moved with them (too small ones dropped)."""
        import torch.nn.functional as F

        half = self.size // 2
        others = torch.randint(0, len(self), (3,)).tolist()
        x = torch.zeros(3, self.size, self.size)
        rows = []
        for k, j in enumerate([i, *others]):
            xj, bj = self._one(j)
            oy, ox = (k // 2) * half, (k % 2) * half
            x[:, oy : oy + half, ox : ox + half] = F.interpolate(xj[None], size=(half, half), mode="bilinear")[0]
            b = bj.clone()
            b[:, 1:] = b[:, 1:] * (half / self.size) + torch.tensor([ox, oy, ox, oy], dtype=b.dtype)
            rows.append(b[((b[:, 3] - b[:, 1]) >= 2) & ((b[:, 4] - b[:, 2]) >= 2)])
        return x, torch.cat(rows) if rows else torch.zeros(0, 5)

    def _one(self, i):
        from PIL import Image

        with Image.open(self.paths[i]) as im:
            im = im.convert("RGB")
        rows = self.boxes[i]
        cls = torch.tensor([self.vocab.index(r[0]) for r in rows], dtype=torch.float32)
        b = torch.tensor([r[1:] for r in rows], dtype=torch.float32).reshape(-1, 4)
        if self.augment is None:  # exactly what inference does to an image
            x = torch.from_numpy(preprocess(im, self.size, self.mean, self.std))
            b = b * torch.tensor([self.size / im.width, self.size / im.height] * 2)
        else:
            from torchvision import tv_tensors
            from torchvision.transforms.v2 import functional as TF

            img = tv_tensors.Image(TF.pil_to_tensor(im))
            bb = tv_tensors.BoundingBoxes(b, format="XYXY", canvas_size=(im.height, im.width))
            img, target = self.augment(img, {"boxes": bb, "labels": cls})
            b, cls = target["boxes"].as_subclass(torch.Tensor).float(), target["labels"]
            x = img.as_subclass(torch.Tensor).float() / 255.0
            x = (x - torch.tensor(self.mean).view(3, 1, 1)) / torch.tensor(self.std).view(3, 1, 1)
        return x, torch.cat([cls.view(-1, 1).float(), b], dim=1)


def collate(samples):
    """Stack images; pad box tables to the batch's largest with rows of class -1."""
    xs = torch.stack([s[0] for s in samples])
    m = max(1, max(s[1].shape[0] for s in samples))
    t = torch.full((len(samples), m, 5), -1.0)
    for i, (_, b) in enumerate(samples):
        t[i, : b.shape[0]] = b
    return xs, t


def check_dataset(recipe, root=None) -> None:
    root = _root(recipe, root)
    for split in ("train", "valid"):
        if not (root / split / SPLIT_ANNOTATIONS).is_file():
            raise DataError(f"{root / split}: no {SPLIT_ANNOTATIONS}; run `chiquito dataset {recipe.path}` first")


def _loader(ds, bs: int, shuffle: bool, workers: int):
    from fastai.data.load import DataLoader

    return DataLoader(
        ds,
        bs=min(bs, max(1, len(ds))),
        shuffle=shuffle,
        drop_last=shuffle and len(ds) > bs,
        num_workers=workers,
        create_batch=collate,
    )


def make_dls(recipe, augment: bool, root=None):
    """fastai DataLoaders over the train and valid splits (train augmented when `augment`)."""
    require_detect_extra()  # before finetune writes or trains anything
    from fastai.data.core import DataLoaders

    root = _root(recipe, root)
    check_dataset(recipe, root)
    labels = list(recipe.detect.labels)
    f, b = recipe.finetune, get_backbone(recipe.finetune.backbone)
    sets = {}
    for split in ("train", "valid"):
        paths, boxes, _ = read_split(root / split, labels)
        aug = augmentation(f.augment, f.size, b.mean) if augment and split == "train" else None
        sets[split] = DetSet(paths, boxes, labels, f.size, b.mean, b.std, aug, f.augment.mosaic)
    dls = DataLoaders(
        _loader(sets["train"], f.bs, True, f.workers),
        _loader(sets["valid"], f.bs, False, f.workers),
        path=root,
        device=torch.device("cpu") if not torch.cuda.is_available() else None,
    )
    return dls


def memorise_dls(recipe, root, n_images: int) -> tuple:
    """A few training images, validated on themselves, no augmentation (`chiquito sanity`)."""
    from fastai.data.core import DataLoaders

    root = DatasetFolder(_root(recipe, root)).split("train")
    labels = list(recipe.detect.labels)
    paths, boxes, _ = read_split(root, labels)
    order = sorted(range(len(paths)), key=lambda i: unit_hash(recipe.seed, "sanity", paths[i].name))[:n_images]
    b, f = get_backbone(recipe.finetune.backbone), recipe.finetune
    ds = DetSet([paths[i] for i in order], [boxes[i] for i in order], labels, f.size, b.mean, b.std)
    bs = max(1, len(ds) // 2)
    return DataLoaders(_loader(ds, bs, True, 0), _loader(ds, bs, False, 0)), [paths[i] for i in order]
