"""The systems the speed benchmark races, each training the same network on the same images with the same
schedule (``convscope bench speed-fashion``; :mod:`convscope.bench.speed` runs each in its own process).

- ``plain``: the loop the seeds write: a ``Dataset`` that hands out PIL images (as torchvision's data sets do),
  torchvision transforms per sample, a ``DataLoader``, fp32.
- ``lightning``: PyTorch Lightning's ``Trainer`` set up as its documentation recommends on a CPU:
  ``precision="bf16-mixed"``, the same per-sample ``DataLoader`` with worker processes, its defaults otherwise
  (checkpoints included).
- ``bare``: a bare loop over convscope's resident tensors and batched augmentation, bf16 and channels_last: what
  the engine would cost if it cost nothing (the engine-overhead figure).
- ``convscope``: ``api.train`` on the recipe.

Every system gets the same initial weights (the recipe's seed), optimiser and per-step schedule (built by the
engine's own functions), loss (cross-entropy with the recipe's label smoothing) and augmentation (reflect-padded
random crop, horizontal flip). After each epoch the harness measures test accuracy with one shared function,
on a clock that is paused meanwhile: the seconds are training seconds only, for every system alike.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset

from convscope.bench.runs import child_main
from convscope.config import Recipe, load_recipe
from convscope.data.base import ImageSet
from convscope.data.modalities import get_modality
from convscope.data.modalities.image import ImageData, make_loader
from convscope.engine.callbacks import Callback
from convscope.engine.optim import build_optimizer, build_scheduler
from convscope.engine.seeding import seed_everything
from convscope.errors import UserError
from convscope.models.layers import eval_mode

# Lightning's DataLoader check asks for worker processes; one is what two cores can spare for decoding beside
# the training step's threads (two workers measured slower here: they take the step's cores).
LIGHTNING_WORKERS = 1


def seconds_to_target(curve: list[dict], target: float) -> float | None:
    """Training seconds at the end of the first epoch whose test accuracy reaches ``target``; None if none does."""
    return next((row["seconds"] for row in curve if row["accuracy"] >= target), None)


@dataclass
class EpochClock:
    """Training time with the per-epoch test evaluation left out, and the accuracy curve it measures."""

    test: Callable[[nn.Module], float]
    curve: list[dict] = field(default_factory=list)
    _started: float = 0.0
    _excluded: float = 0.0

    def start(self) -> None:
        self._started, self._excluded = time.perf_counter(), 0.0

    def elapsed(self) -> float:
        return time.perf_counter() - self._started - self._excluded

    def epoch_end(self, model: nn.Module) -> None:
        seconds = self.elapsed()
        paused = time.perf_counter()
        accuracy = self.test(model)
        self._excluded += time.perf_counter() - paused
        self.curve.append({"epoch": len(self.curve) + 1, "seconds": round(seconds, 2), "accuracy": accuracy})
        print(f"  epoch {len(self.curve)}: test accuracy {accuracy:.4f} after {seconds:.1f} s", flush=True)


def test_accuracy_fn(data: ImageData, recipe: Recipe) -> Callable[[nn.Module], float]:
    """Test accuracy of a model, measured the same way for every system (bf16 inference, channels_last) through
    the recipe's task, so a recipe's test-time augmentation counts for every system alike."""
    from convscope import api

    task = api.build_task(recipe, data.info)
    loader = make_loader(data.test, recipe.data.eval_batch_size, mean=data.mean, std=data.std,
                         device=torch.device("cpu"), channels_last=True)  # fmt: skip

    def measure(model: nn.Module) -> float:
        correct = 0
        with eval_mode(model), torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            for x, y in loader:
                correct += int((task.predict(model, x).argmax(dim=1) == y).sum())
        return correct / len(data.test)

    return measure


@dataclass
class Setup:
    """What every system starts from."""

    recipe: Recipe
    data: ImageData
    model: nn.Module
    clock: EpochClock

    @property
    def label_smoothing(self) -> float:
        return float(self.recipe.task.options.get("label_smoothing", 0.0))

    @property
    def epochs(self) -> int:
        return self.recipe.train.epochs


def prepare(recipe_name: str, overrides: dict[str, str]) -> Setup:
    """The recipe without a validation split (every system trains on the whole training set and is measured on
    the test set) and the seeded initial network."""
    from convscope import api

    recipe = load_recipe(recipe_name, {**overrides, "data.valid_fraction": "0", "train.quiet": "true"})
    modality = get_modality("image")
    data = modality.prepare(recipe)
    seed_everything(recipe.train.seed)
    model = api.build_model(recipe, data.info, modality)
    api.fit_layers_to_data(model, data, recipe.model.name)
    return Setup(recipe, data, model, EpochClock(test_accuracy_fn(data, recipe)))


class PILImages(Dataset):
    """Resident uint8 images handed out one by one as PIL images, as ``torchvision.datasets`` do."""

    def __init__(self, images: ImageSet, transform: Callable) -> None:
        self.images, self.transform = images, transform
        self.mode = "L" if images.channels == 1 else "RGB"

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        pixels = self.images.images[index].permute(1, 2, 0).squeeze(-1).numpy()
        return self.transform(Image.fromarray(pixels, mode=self.mode)), int(self.images.labels[index])


def per_sample_loader(setup: Setup, **loader_options: object) -> DataLoader:
    """The seeds' input pipeline: torchvision transforms on each PIL image, batched by a DataLoader."""
    from torchvision import transforms

    augment, size = setup.recipe.augment, setup.data.train.image_size
    steps = []
    if augment.crop_padding:
        steps.append(transforms.RandomCrop(size, padding=augment.crop_padding, padding_mode="reflect"))
    if augment.hflip:
        steps.append(transforms.RandomHorizontalFlip())
    steps += [transforms.ToTensor(), transforms.Normalize(setup.data.mean, setup.data.std)]
    dataset = PILImages(setup.data.train, transforms.Compose(steps))
    return DataLoader(dataset, batch_size=setup.recipe.train.batch_size, shuffle=True, **loader_options)


def optimizer_and_schedule(setup: Setup, steps_per_epoch: int):
    optimizer = build_optimizer(setup.recipe.optim, setup.model.parameters())
    return optimizer, build_scheduler(setup.recipe.optim, optimizer, steps_per_epoch, setup.epochs)


def run_plain(setup: Setup) -> None:
    loader = per_sample_loader(setup)
    model = setup.model
    optimizer, scheduler = optimizer_and_schedule(setup, len(loader))
    setup.clock.start()
    for _ in range(setup.epochs):
        model.train()
        for x, y in loader:
            optimizer.zero_grad()
            loss = F.cross_entropy(model(x), y, label_smoothing=setup.label_smoothing)
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
        setup.clock.epoch_end(model)


def run_bare(setup: Setup) -> None:
    """The computation convscope's engine runs, without the engine: same loader, precision, loss and order."""
    loader = setup.data.loaders(setup.recipe, torch.device("cpu"))["train"]
    model = setup.model
    if setup.recipe.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer, scheduler = optimizer_and_schedule(setup, len(loader))
    bf16 = setup.recipe.train.precision == "bf16"
    seed_everything(setup.recipe.train.seed)
    setup.clock.start()
    for epoch in range(setup.epochs):
        model.train()
        loader.set_epoch(epoch)
        for x, y in loader:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = F.cross_entropy(model(x).float(), y, label_smoothing=setup.label_smoothing)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if scheduler is not None:
                scheduler.step()
        setup.clock.epoch_end(model)


class _ClockCallback(Callback):
    def __init__(self, clock: EpochClock) -> None:
        self.clock = clock

    def on_fit_start(self, trainer) -> None:
        self.clock.start()

    def on_epoch_end(self, trainer, row) -> None:
        self.clock.epoch_end(trainer.model)


def run_convscope(setup: Setup, run_dir: Path) -> None:
    from convscope import api

    # api.train builds its own network: the same seed gives it the same initial weights as the other systems.
    api.train(setup.recipe, out=run_dir, callbacks=[_ClockCallback(setup.clock)])


def run_lightning(setup: Setup, run_dir: Path) -> None:
    try:
        import lightning as L
    except ImportError:
        raise UserError("the speed benchmark's system 'lightning' needs PyTorch Lightning: "
                        "pip install 'convscope[bench]'") from None  # fmt: skip

    loader = per_sample_loader(setup, num_workers=LIGHTNING_WORKERS, persistent_workers=True)

    class Classifier(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.model = setup.model

        def training_step(self, batch, batch_index):
            x, y = batch
            return F.cross_entropy(self.model(x), y, label_smoothing=setup.label_smoothing)

        def configure_optimizers(self):
            optimizer, scheduler = optimizer_and_schedule(setup, len(loader))
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    class Clock(L.Callback):
        def on_train_start(self, trainer, module) -> None:
            setup.clock.start()

        def on_train_epoch_end(self, trainer, module) -> None:
            setup.clock.epoch_end(module.model)

    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        precision="bf16-mixed",
        max_epochs=setup.epochs,
        default_root_dir=run_dir,
        callbacks=[Clock()],
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(Classifier(), train_dataloaders=loader)


SYSTEMS = ("convscope", "bare", "lightning", "plain")


def peak_rss_mb() -> float:
    """Peak resident memory of this process, or of its largest child (DataLoader workers) if that is larger."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return round((own + children) / 1024, 1)  # Linux reports KiB; workers run beside the main process


def run_system(system: str, recipe_name: str, overrides: dict[str, str], work_dir: Path) -> dict:
    """Train ``system`` once; its accuracy curve, training seconds and images per second."""
    setup = prepare(recipe_name, overrides)
    print(f"{system}: {setup.recipe.name}, {setup.epochs} epochs of {len(setup.data.train)} images", flush=True)
    if system == "plain":
        run_plain(setup)
    elif system == "bare":
        run_bare(setup)
    elif system == "lightning":
        run_lightning(setup, work_dir / "lightning")
    elif system == "convscope":
        run_convscope(setup, work_dir / "convscope")
    else:
        raise ValueError(f"unknown system {system!r}; expected one of {SYSTEMS}")
    curve = setup.clock.curve
    seconds = curve[-1]["seconds"]
    return {
        "curve": curve,
        "train_seconds": seconds,
        "final_accuracy": curve[-1]["accuracy"],
        "images_per_second": round(len(setup.data.train) * len(curve) / seconds, 1),
        "precision": "fp32" if system == "plain" else "bf16",
        "peak_rss_mb": peak_rss_mb(),
    }


def main(argv: list[str]) -> None:
    """``SYSTEM RECIPE OVERRIDES_JSON RESULT_JSON``: one system's run (see bench.runs.child_main)."""
    child_main(argv, run_system)
