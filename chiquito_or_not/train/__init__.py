"""Shared training mechanics: backbones, the learner, the feature cache, the LR finder and run folders'
state; the stages (finetune, compare, sweep, seeds, sanity) compose them."""
