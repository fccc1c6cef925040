"""Shared dataset mechanics: sources → raw files → clean (decode, reject, de-duplicate) → split; the dataset
stage (stages/dataset.py) composes them with the task's parts."""
