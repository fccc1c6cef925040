"""The shared dataset stages: sources → raw files → clean (decode, reject, de-duplicate) → split."""
