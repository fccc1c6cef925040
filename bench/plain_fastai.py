# ruff: noqa: F403, F405  (the course style: from fastai.vision.all import *)
"""The default recipe's whole schedule written as a plain fastai script, the way the fastai course writes it.

Same data folder (train/valid), backbone and weights, image size, batch size, class weights, LR finder,
epochs and learning rates as recipes/face-or-not.toml; fastai's defaults for everything else (data
loader workers, progress bars). Run by bench/bench_train.py; alone: python bench/plain_fastai.py DATA_DIR
"""

import json
import sys
import time
from pathlib import Path

from fastai.vision.all import *  # noqa: F403 - the course's style

from chiquito_or_not.train.backbones import BACKBONES, create_body  # only to load the same pretrained body
from chiquito_or_not.train.portable import three_groups

t0 = time.time()
path = Path(sys.argv[1])
set_seed(42, reproducible=True)
b = BACKBONES["efficientnet_lite0"]
dls = ImageDataLoaders.from_folder(path, train="train", valid="valid", item_tfms=Resize(224),
                                   batch_tfms=Normalize.from_stats(b.mean, b.std), bs=32, seed=42)
counts = [sum(1 for _ in (path / "train" / c).iterdir()) for c in dls.vocab]
weights = tensor([sum(counts) / (len(counts) * n) for n in counts]).float()
body = create_body("efficientnet_lite0")
model = nn.Sequential(body, create_head(num_features_model(body), dls.c))
apply_init(model[1], nn.init.kaiming_normal_)
learn = Learner(dls, model, loss_func=CrossEntropyLossFlat(weight=weights), metrics=accuracy,
                splitter=partial(three_groups, cut=b.cut))
learn.freeze()
learn.lr_find(num_it=50)
learn.fit_one_cycle(2, 1e-2)

dls_aug = ImageDataLoaders.from_folder(path, train="train", valid="valid", item_tfms=Resize(224),
                                       batch_tfms=[*aug_transforms(), Normalize.from_stats(b.mean, b.std)],
                                       bs=32, seed=42)
learn.dls = dls_aug
# SGDR, 4 cycles of 1 epoch (fit_sgdr divides by cycle_mult - 1, so cycle_mult = 1 is written out)
learn.fit(4, cbs=ParamScheduler({"lr": combine_scheds([0.25] * 4, [SchedCos(1e-2, 0)] * 4)}))
learn.unfreeze()
learn.fit_sgdr(3, 1, lr_max=slice(1e-5, 1e-3), cycle_mult=2)
acc = float(learn.validate()[1])
print(json.dumps({"seconds": round(time.time() - t0, 1), "valid_accuracy": acc}))
