"""A recipe's test accuracy after each epoch, four ways: the model as trained, with flip test-time augmentation, and
an exponential moving average of its weights (and batch-norm statistics), with and without the flips:

`python benchmarks/probes/recipe_levers.py fashion-mnist 0.99 augment.hflip=true train.seed=1`

Arguments: the recipe, the EMA decay, then any `section.field=value` overrides. This is how the fashion-mnist
recipe's settings were chosen (benchmarks/README.md): it trains through `api.train` into a temporary folder and
measures each variant on the test set in a callback, so the training itself is the recipe's.
"""

import sys
import tempfile
from pathlib import Path

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from convscope import api
from convscope.config import load_recipe
from convscope.data.modalities import get_modality
from convscope.engine.callbacks import Callback

recipe_name, decay = sys.argv[1], float(sys.argv[2])
overrides = dict(arg.split("=", 1) for arg in sys.argv[3:])
recipe = load_recipe(recipe_name, {**overrides, "train.quiet": "true"})
test = get_modality("image").prepare(recipe).loaders(recipe, torch.device("cpu"))["test"]


def accuracy(model: nn.Module, flip: bool) -> float:
    was_training = model.training
    model.eval()
    correct = seen = 0
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        for x, y in test:
            x = x.contiguous(memory_format=torch.channels_last)
            probs = model(x).float().softmax(1)
            if flip:
                probs = probs + model(x.flip(-1)).float().softmax(1)
            correct += int((probs.argmax(1) == y).sum())
            seen += len(y)
    model.train(was_training)
    return correct / seen


class Levers(Callback):
    def on_fit_start(self, trainer) -> None:
        self.ema = AveragedModel(trainer.model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)

    def on_train_batch_end(self, trainer, logs) -> None:
        self.ema.update_parameters(trainer.model)

    def on_epoch_end(self, trainer, row) -> None:
        raw, ema = trainer.model, self.ema.module
        figures = {
            "raw": accuracy(raw, False),
            "raw+flip": accuracy(raw, True),
            "ema": accuracy(ema, False),
            "ema+flip": accuracy(ema, True),
        }
        shown = " ".join(f"{name} {value:.4f}" for name, value in figures.items())
        print(f"RESULT epoch {row['epoch']} {shown} train_s {trainer.history.train_seconds:.1f}", flush=True)


with tempfile.TemporaryDirectory() as folder:
    api.train(recipe, out=Path(folder) / "run", callbacks=[Levers()])
