"""`python -m chiquito_or_not` (what torchrun and accelerate launch run): the `chiquito` command."""

from .cli import run

if __name__ == "__main__":  # not again in a process that multiprocessing spawns (img2dataset)
    run()
