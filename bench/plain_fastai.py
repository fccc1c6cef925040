# ruff: noqa: F403, F405  (the course style: from fastai.vision.all import *)
"""A recipe's whole schedule written as a plain fastai script, the way the fastai course writes it.

Same data folder (train/valid), backbone and weights, image size, batch size, class weights, LR finder,
epochs and learning rates as the recipe; fastai's defaults for everything else (data loader workers,
progress bars, fastai's own fit_sgdr schedule written out). Run by bench/bench_train.py; alone:
python bench/plain_fastai.py RECIPE DATA_DIR [SEED]
"""

import json
import sys
import time
from pathlib import Path

from fastai.vision.all import *  # noqa: F403 - the course's style

from chiquito_or_not.core.backbone_table import BACKBONES
from chiquito_or_not.core.recipe import load_recipe  # only to read the same schedule
from chiquito_or_not.train.backbones import create_body  # only to load the same pretrained body
from chiquito_or_not.train.portable import three_groups

t0 = time.time()
r = load_recipe(sys.argv[1])
f = r.finetune
path = Path(sys.argv[2])
seed = int(sys.argv[3]) if len(sys.argv) > 3 else r.seed
set_seed(seed, reproducible=True)
b = BACKBONES[f.backbone]
dls = ImageDataLoaders.from_folder(
    path,
    train="train",
    valid="valid",
    item_tfms=Resize(f.size),
    batch_tfms=Normalize.from_stats(b.mean, b.std),
    bs=f.bs,
    seed=seed,
)
counts = [sum(1 for _ in (path / "train" / c).iterdir()) for c in dls.vocab]
weights = tensor([sum(counts) / (len(counts) * n) for n in counts]).float() if r.dataset.balance == "weights" else None
body = create_body(f.backbone)
model = nn.Sequential(body, create_head(num_features_model(body), dls.c))
apply_init(model[1], nn.init.kaiming_normal_)
learn = Learner(
    dls,
    model,
    loss_func=CrossEntropyLossFlat(weight=weights),
    metrics=accuracy,
    splitter=partial(three_groups, cut=b.cut),
)
learn.freeze()
suggested = learn.lr_find(num_it=f.lr_find_iters).valley if f.lr_find else None


def lr(value):
    return suggested if value == "auto" else value


learn.fit_one_cycle(f.frozen.epochs, lr(f.frozen.lr))

dls_aug = ImageDataLoaders.from_folder(
    path,
    train="train",
    valid="valid",
    item_tfms=Resize(f.size),
    batch_tfms=[*aug_transforms(), Normalize.from_stats(b.mean, b.std)],
    bs=f.bs,
    seed=seed,
)
learn.dls = dls_aug


def sgdr(cycles, cycle_len, cycle_mult, lr_max):
    """SGDR with restarts, written out (fastai's fit_sgdr divides by cycle_mult - 1)."""
    lens = [cycle_len * cycle_mult**i for i in range(cycles)]
    learn.fit(
        sum(lens),
        cbs=ParamScheduler({"lr": combine_scheds([n / sum(lens) for n in lens], [SchedCos(lr_max, 0)] * cycles)}),
    )


a, u = f.augmented, f.unfrozen
sgdr(a.cycles, a.cycle_len, a.cycle_mult, lr(a.lr))
learn.unfreeze()
sgdr(u.cycles, u.cycle_len, u.cycle_mult, np.array(u.lrs))
learn.dls = dls  # validation without augmentation, as fastai's validate would use
preds, targs = learn.get_preds(dl=dls.valid)
right = (preds.argmax(1) == targs).tolist()
outcomes = {str(Path(p).relative_to(path / "valid")): int(ok) for p, ok in zip(dls.valid_ds.items, right)}
print()  # fastprogress leaves its last bar without a newline: the result gets its own line
print(
    json.dumps(
        {
            "seconds": round(time.time() - t0, 1),
            "valid_accuracy": sum(right) / len(right),
            "seed": seed,
            "outcomes": outcomes,
        }
    )
)
