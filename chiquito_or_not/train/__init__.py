"""Shared training: backbones, the stage schedule (frozen → augmented → unfrozen, SGDR, resume), the LR
finder, the feature cache, precision and processes; compare, sweep and sanity run it."""
