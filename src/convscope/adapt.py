"""Fitting a recipe to the data it meets: a user's own folder is not the benchmark the recipe was tuned on.

Two steps around the data's preparation, each returning the recipe to train and the notes that say what changed.
Nothing given on the command line (``Recipe.explicit``) is ever changed; a resumed run reads its recipe as
adapted, and adapting it again changes nothing.

- :func:`before_data`: on data other than the recipe's own (``made_for``), the settings that only make sense for
  that data set are reset: its class list and per-class sample (they name its classes) and no validation split
  (its large test set measured the run; on other data a validation split picks the kept epoch and shows
  overfitting). The batch and the rates tied to it are :func:`after_data`'s: a cifar10 run's batch of 2000 with
  Muon's SGD rates scaled for it made a fine-tuning phase on 123 images diverge; at a batch fitted to the folder,
  with those rates scaled with it, the same recipe fine-tunes (tests/test_own_data.py).
- :func:`after_data`: a batch so large for the training split that an epoch has fewer than :data:`MIN_STEPS` steps
  shrinks until it has them (not below :data:`MIN_BATCH`). The rate is kept: with batch norm, a rate scaled down
  with the batch left a small folder at chance where the recipe's own rate learnt it (benchmarks/README.md, "Small
  folders"). Muon's SGD parts are the exception: they are a per-example rate times the batch (recipes/cifar10.toml),
  so they scale linearly.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

from convscope.config import DataConfig, Recipe

# An epoch needs this many steps for the default schedules to move the weights: with one step per epoch a network
# stays at chance. The default batch shrinks to reach it.
MIN_STEPS = 20
# An explicitly set batch giving fewer steps than this is kept, with a note.
FEW_STEPS = 10
# Batch norm's statistics need a few examples, and batches of 2 learnt a small folder worse than batches of 8 with
# fewer steps (benchmarks/README.md, "Small folders"): smaller batches are not made.
MIN_BATCH = 8

Note = Callable[[str], None]


def _free(recipe: Recipe, key: str) -> bool:
    return key not in recipe.explicit


def before_data(recipe: Recipe, note: Note) -> Recipe:
    """Reset the recipe's settings that belong to its own data set when it trains on another one."""
    if not recipe.on_other_data:
        return recipe
    data_defaults = DataConfig()
    data_changes: dict[str, Any] = {}
    reset = []
    for key, why in (("classes", "its own data set's classes"), ("per_class", "a sample of its own data set")):
        if getattr(recipe.data, key) != getattr(data_defaults, key) and _free(recipe, f"data.{key}"):
            data_changes[key] = getattr(data_defaults, key)
            reset.append(f"data.{key} = {getattr(recipe.data, key)!r} ({why})")
    if recipe.data.valid_fraction == 0 and _free(recipe, "data.valid_fraction"):
        data_changes["valid_fraction"] = data_defaults.valid_fraction
        reset.append(f"data.valid_fraction = 0 -> {data_defaults.valid_fraction} (a validation split picks the "
                     "kept epoch and shows overfitting)")  # fmt: skip
    if not reset:
        return recipe
    note(f"recipe {recipe.name!r} was written for data {recipe.made_for!r}; on {recipe.data.name!r} these settings "
         "do not carry over and are reset: " + "; ".join(reset))  # fmt: skip
    return dataclasses.replace(recipe, data=dataclasses.replace(recipe.data, **data_changes))


def after_data(recipe: Recipe, train_images: int, world_size: int, note: Note) -> Recipe:
    """Shrink a default batch that leaves an epoch fewer than :data:`MIN_STEPS` steps; note an explicit one that
    leaves fewer than :data:`FEW_STEPS`. ``train_images`` counts the whole training split; each of ``world_size``
    processes takes its share."""
    batch = recipe.train.batch_size
    images = math.ceil(train_images / world_size)
    steps = math.ceil(images / batch)
    if not _free(recipe, "train.batch_size"):
        if steps < FEW_STEPS:
            note(f"train.batch_size = {batch} leaves {steps} step{'s' if steps != 1 else ''} per epoch on "
                 f"{train_images} training images: too few to learn much per epoch; a smaller batch or more epochs "
                 "would help")  # fmt: skip
        return recipe
    if steps >= MIN_STEPS:
        return recipe
    smaller = even_batch(images, max(MIN_BATCH, images // MIN_STEPS))
    if smaller >= batch:
        return recipe
    optim, scaled = scale_rates(recipe, smaller / batch)
    note(f"{train_images} training images: the recipe's batch of {batch} would give {steps} step"
         f"{'s' if steps != 1 else ''} per epoch; training with batch {smaller} ({math.ceil(images / smaller)} steps "
         f"per epoch){scaled}. Set --batch-size to choose")  # fmt: skip
    return dataclasses.replace(recipe, optim=optim, train=dataclasses.replace(recipe.train, batch_size=smaller))


def even_batch(images: int, batch: int) -> int:
    """``batch``, or up to 3 more, whichever leaves no last batch smaller than half the others: a last batch of one
    image (190 images in batches of 9) is a step on a single example, its batch-norm statistics meaningless."""
    for candidate in range(batch, batch + 4):
        if images % candidate == 0 or images % candidate >= candidate / 2:
            return candidate
    return batch


def scale_rates(recipe: Recipe, ratio: float) -> tuple[Any, str]:
    """The optimiser's rates for a batch ``ratio`` times the recipe's, and the words for what changed: Muon's SGD
    parts linearly (a per-example rate times the batch); every other rate is kept (see the module's docstring)."""
    optim = recipe.optim
    if optim.name != "muon" or not _free(recipe, "optim.linear_lr") or not _free(recipe, "optim.bias_lr"):
        return optim, ", the recipe's learning rate kept"
    changes = {"linear_lr": optim.linear_lr * ratio, "bias_lr": optim.bias_lr * ratio}
    return dataclasses.replace(optim, **changes), f", optim.linear_lr and bias_lr scaled by {ratio:.3g} with it"
