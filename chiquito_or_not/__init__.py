"""chiquito_or_not: one recipe file, from images to an evaluated, exported image classifier.

Stages, one module each: `dataset`, `lr_find`, `finetune`, `evaluate`, `predict`. Importing the
package is cheap; torch and fastai load only inside the stages that need them.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
