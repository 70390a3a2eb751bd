"""airbench94 (Keller Jordan, github.com/KellerJordan/cifar10-airbench, ``airbench94.py``) as a system of the race
(``convscope bench race-cifar10``), written here from its published recipe and run on convscope's resident tensors,
with the same bf16 autocast and channels_last as convscope, so that the race compares recipes and engines rather
than precision.

- Network: ``fastnet`` with the whitening stem (2x2, fitted to the training patches, filters frozen, its bias
  trained for the first epochs only), widths 64 / 256 / 256, identity-initialised filters, batch norm with its
  scales frozen at 1, momentum 0.4 (PyTorch's convention; airbench writes 0.6) and eps 1e-12, logits times 1/9.
- Training: Nesterov SGD on the loss summed over the batch, its rates given per 1024 examples and decoupled from
  the momentum (and the weight decay from the rate), batch-norm biases at 64 times the rate; a triangular schedule;
  label smoothing; Lookahead from epoch 3 (every few steps the weights and batch-norm statistics move to their
  exponential average, whose decay grows over training); 9.9 epochs of whole batches.
- Augmentation: translation by up to 2 pixels (reflect padding) and the alternating flip: each image is flipped in
  every other epoch, a random half of the images in the even epochs and the other half in the odd ones.
- Test-time augmentation (its level 2): logits averaged over the image and its mirror (weight 1/2) and both of
  them shifted one pixel up-left and down-right (1/8 each).

What differs from the published script, and why: the device and precision (bf16 autocast on a CPU, not fp16 on
CUDA, like every raced system); the whitening is fitted to 5,000 training images spread over the set (convscope's
:func:`~convscope.models.whitening.fit_to_data`), not the first 5,000; the crops are drawn per batch rather than
per epoch (the same distribution); the clock leaves the whitening fit and every evaluation out, as it does for
every system of the race.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from convscope.bench.speed_systems import EpochClock, peak_rss_mb
from convscope.config import load_recipe
from convscope.data.augment import HorizontalFlip, Normalize, RandomCrop
from convscope.data.base import ImageSet
from convscope.data.loader import IndexLoader, TensorLoader
from convscope.data.modalities import get_modality
from convscope.data.modalities.image import ImageData, make_loader
from convscope.engine.seeding import seed_everything
from convscope.errors import UserError
from convscope.models.fastnet import fastnet
from convscope.models.layers import eval_mode
from convscope.models.whitening import FIT_IMAGES, PatchWhitening, fit_to_data

# The network (airbench94's ``hyp['net']``): not tunable here, it is the peer being raced.
WIDTHS = (64, 256, 256)
BN_MOMENTUM = 0.4  # PyTorch's convention (weight of the new batch); airbench's 0.6 is 1 - this
BN_EPS = 1e-12
LOGIT_SCALE = 1 / 9
TEST_BATCH = 2000
# ``--set`` keys that reach airbench's hyper-parameters rather than the recipe (the race shares the recipe's data).
PREFIX = "airbench."


@dataclass(frozen=True)
class Hyper:
    """airbench94's training hyper-parameters (its ``hyp['opt']`` and ``hyp['aug']``), units beside them."""

    epochs: float = 9.9
    batch_size: int = 1024
    lr: float = 11.5  # per 1024 examples, for a step scale decoupled from the momentum
    momentum: float = 0.85  # Nesterov
    weight_decay: float = 0.0153  # per 1024 examples, decoupled from the learning rate
    bias_scaler: float = 64.0  # batch-norm biases: this times the learning rate, the same weight decay
    label_smoothing: float = 0.2
    lr_start: float = 0.2  # the triangular schedule: this fraction of the rate at step 0,
    lr_peak_at: float = 0.23  # rising linearly to the full rate at this fraction of the steps,
    lr_end: float = 0.07  # then falling linearly to this fraction at the last step
    whiten_bias_epochs: int = 3  # the whitening layer's bias trains this many epochs, then stays
    lookahead_start_epoch: int = 3
    lookahead_every: int = 5  # steps between two moves to the average
    lookahead_decay: float = 0.95  # per step; the decay of one move is decay**every x (step / steps)**power
    lookahead_power: float = 3.0
    translate: int = 2  # pixels, reflect padding


POSITIVE = ("epochs", "batch_size", "lookahead_every")  # the Hyper fields that must be above 0


def parse_hyper(overrides: dict[str, str]) -> tuple[Hyper, dict[str, str]]:
    """``airbench.FIELD=VALUE`` overrides applied to :class:`Hyper`, and the rest (the recipe's, for the data)."""
    defaults = Hyper()
    types = {f.name: type(getattr(defaults, f.name)) for f in dataclasses.fields(Hyper)}
    changes: dict[str, float | int] = {}
    for key, value in overrides.items():
        if not key.startswith(PREFIX):
            continue
        name = key.removeprefix(PREFIX)
        if name not in types:
            raise UserError(f"--set {key}: airbench has no hyper-parameter {name!r}; expected one of: "
                            f"{', '.join(PREFIX + n for n in types)}")  # fmt: skip
        convert = types[name]
        try:
            changes[name] = convert(value)
        except ValueError:
            raise UserError(f"--set {key}={value}: expected {'an integer' if convert is int else 'a number'}") from None
        least = "> 0" if name in POSITIVE else ">= 0"
        if not (changes[name] > 0 if name in POSITIVE else changes[name] >= 0):
            raise UserError(f"--set {key}={value}: expected a value {least}")
    rest = {key: value for key, value in overrides.items() if not key.startswith(PREFIX)}
    return dataclasses.replace(defaults, **changes), rest


def airbench_net(num_classes: int = 10, in_channels: int = 3, image_size: tuple[int, int] = (32, 32)) -> nn.Module:
    """airbench94's network: convscope's fastnet is the same layers (global max pool where airbench pools 3x3 over
    the 3x3 maps of a 32x32 image) once given airbench's settings and its batch norm's eps."""
    model = fastnet(num_classes, in_channels, image_size, widths=WIDTHS, scale=LOGIT_SCALE, stem="whiten",
                    bn_momentum=BN_MOMENTUM, bn_scale=False, dirac=True)  # fmt: skip
    for layer in model.modules():
        if isinstance(layer, nn.BatchNorm2d):
            layer.eps = BN_EPS
    return model


def triangle(steps: int, start: float, peak_at: float, end: float) -> list[float]:
    """The learning-rate factor at steps 0..steps: linear from ``start`` to 1 at step ``int(peak_at * steps)``,
    then linear to ``end`` at the last step."""
    top = int(peak_at * steps)
    return [start + (1 - start) * i / top if i < top else 1 + (end - 1) * (i - top) / max(1, steps - top)
            for i in range(steps + 1)]  # fmt: skip


def airbench_optimizer(model: nn.Module, hyper: Hyper) -> torch.optim.SGD:
    """Nesterov SGD with airbench's decoupled rates turned into PyTorch's: for a gradient constant in time, Nesterov
    momentum takes steps ``1 + 1 / (1 - momentum)`` times the gradient, so the rate is divided by that (and by 1024,
    the examples it is given per); PyTorch multiplies the weight decay by the rate, so it is divided by the rate."""
    kilostep = 1024 * (1 + 1 / (1 - hyper.momentum))
    lr = hyper.lr / kilostep
    decay = hyper.weight_decay * hyper.batch_size / kilostep
    bias_lr = lr * hyper.bias_scaler
    norm_biases = [m.bias for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    taken = {id(p) for p in norm_biases}
    others = [p for p in model.parameters() if p.requires_grad and id(p) not in taken]
    groups = [
        {"params": norm_biases, "lr": bias_lr, "weight_decay": decay / bias_lr},
        {"params": others, "lr": lr, "weight_decay": decay / lr},
    ]
    return torch.optim.SGD(groups, momentum=hyper.momentum, nesterov=True)


class Lookahead:
    """airbench's Lookahead: an exponential average of the weights and batch-norm statistics, copied back into the
    network at every update, so training goes on from the average."""

    def __init__(self, model: nn.Module) -> None:
        self.average = {name: value.detach().clone() for name, value in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module, decay: float) -> None:
        """Move the average ``1 - decay`` of the way to the network, then set the network to it (``decay = 1``: only
        set the network to the average)."""
        for average, current in zip(self.average.values(), model.state_dict().values(), strict=True):
            if current.is_floating_point():  # not the batch counters
                average.lerp_(current, 1 - decay)
                current.copy_(average)


class AlternatingFlipLoader(IndexLoader):
    """airbench's training batches from resident uint8 images: whole batches only, each image flipped in the
    epochs of one parity (drawn once per image), translated by up to ``translate`` pixels."""

    def __init__(self, data: ImageSet, batch_size: int, *, seed: int, translate: int, mean: list[float],
                 std: list[float], device: torch.device) -> None:  # fmt: skip
        super().__init__(len(data), batch_size, shuffle=True, seed=seed, drop_last=True)
        self.data, self.device = data, device
        self.generator = torch.Generator().manual_seed(seed)
        self.flipped_in_even_epochs = torch.rand(len(data), generator=self.generator) < 0.5
        self.crop = RandomCrop(translate, "reflect") if translate else None
        self.normalize = Normalize(mean, std)

    def _batch(self, index: torch.Tensor, epoch: int, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.data.images[index].to(self.device).float().div_(255)
        flip = self.flipped_in_even_epochs[index] ^ bool(epoch % 2)
        x = HorizontalFlip().apply(x, flip.to(self.device))
        if self.crop is not None:
            x = self.crop(x, self.generator)
        x = self.normalize(x).contiguous(memory_format=torch.channels_last)
        return x, self.data.labels[index].to(self.device)


def tta_logits(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """airbench's test-time augmentation (level 2), and the plain logits (its accuracy without it)."""
    plain = model(x).float()
    whole = 0.5 * plain + 0.5 * model(x.flip(-1)).float()

    def mirrored(view: torch.Tensor) -> torch.Tensor:
        return 0.5 * model(view).float() + 0.5 * model(view.flip(-1)).float()

    h, w = x.shape[-2:]
    padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
    shifted = 0.5 * mirrored(padded[..., :h, :w]) + 0.5 * mirrored(padded[..., 2:, 2:])
    return 0.5 * whole + 0.5 * shifted, plain


@dataclass
class TTAAccuracy:
    """Test accuracy with airbench's test-time augmentation (what the clock records), keeping the accuracy without
    it on the side (the same passes give both)."""

    loader: TensorLoader
    without_tta: list[float] = field(default_factory=list)

    def __call__(self, model: nn.Module) -> float:
        correct = plain_correct = total = 0
        with eval_mode(model), torch.inference_mode(), torch.autocast(self.loader.device.type, dtype=torch.bfloat16):
            for x, y in self.loader:
                tta, plain = tta_logits(model, x)
                correct += int((tta.argmax(dim=1) == y).sum())
                plain_correct += int((plain.argmax(dim=1) == y).sum())
                total += len(y)
        self.without_tta.append(plain_correct / total)
        return correct / total


def train_airbench(model: nn.Module, loader: AlternatingFlipLoader, hyper: Hyper, clock: EpochClock) -> int:
    """airbench94's training loop, the test accuracy measured after each epoch on ``clock``; the steps taken."""
    steps = math.ceil(len(loader) * hyper.epochs)
    optimizer = airbench_optimizer(model, hyper)
    schedule = triangle(steps, hyper.lr_start, hyper.lr_peak_at, hyper.lr_end)
    scheduler = LambdaLR(optimizer, lambda step: schedule[step])
    whitening = next(m for m in model.modules() if isinstance(m, PatchWhitening))
    lookahead, step = None, 0
    clock.start()
    for epoch in range(math.ceil(hyper.epochs)):
        # A parameter without a gradient is skipped by SGD: no step, no momentum, no decay.
        whitening.bias.requires_grad_(epoch < hyper.whiten_bias_epochs)
        model.train()
        loader.set_epoch(epoch)
        for x, y in loader:
            with torch.autocast(loader.device.type, dtype=torch.bfloat16):
                logits = model(x).float()
            loss = F.cross_entropy(logits, y, label_smoothing=hyper.label_smoothing, reduction="sum")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            step += 1
            if epoch >= hyper.lookahead_start_epoch and step % hyper.lookahead_every == 0:
                if lookahead is None:
                    lookahead = Lookahead(model)
                else:
                    # The decay grows over training: it moves fast early and averages strongly at the end.
                    decay = hyper.lookahead_decay**hyper.lookahead_every * (step / steps) ** hyper.lookahead_power
                    lookahead.update(model, decay)
            if step >= steps:
                break
        if lookahead is not None:
            lookahead.update(model, decay=1.0)
        clock.epoch_end(model)
    return step


def race_data(recipe_name: str, overrides: dict[str, str]) -> tuple[ImageData, int]:
    """The recipe's data as the other systems of the race get it (no validation split: the whole training set),
    and the recipe's seed."""
    recipe = load_recipe(recipe_name, {**overrides, "data.valid_fraction": "0", "train.quiet": "true"})
    return get_modality("image").prepare(recipe), recipe.train.seed


def run_airbench(recipe_name: str, overrides: dict[str, str], device: torch.device | None = None) -> dict:
    """Train airbench94 once on the data of ``recipe_name`` (its other settings are airbench's own, or
    ``airbench.FIELD`` overrides); the result has the fields of the speed harness's systems."""
    device = device or torch.device("cpu")
    hyper, recipe_overrides = parse_hyper(overrides)
    data, seed = race_data(recipe_name, recipe_overrides)
    loader = AlternatingFlipLoader(data.train, hyper.batch_size, seed=seed, translate=hyper.translate,
                                   mean=data.mean, std=data.std, device=device)  # fmt: skip
    if len(loader) == 0:
        raise UserError(f"airbench: {len(data.train)} training images make no whole batch of {hyper.batch_size}: "
                        "lower --set airbench.batch_size")  # fmt: skip
    seed_everything(seed)
    model = airbench_net(len(data.classes), data.train.channels, data.train.image_size)
    fit_to_data(model, data.normalized_sample(FIT_IMAGES))
    model = model.to(device, memory_format=torch.channels_last)
    accuracy = TTAAccuracy(make_loader(data.test, TEST_BATCH, mean=data.mean, std=data.std, device=device,
                                       channels_last=True))  # fmt: skip
    clock = EpochClock(accuracy)
    print(f"airbench: airbench94, {hyper.epochs} epochs of {len(data.train)} images", flush=True)
    steps = train_airbench(model, loader, hyper, clock)
    curve = [
        {**row, "accuracy_without_tta": plain} for row, plain in zip(clock.curve, accuracy.without_tta, strict=True)
    ]
    seconds = curve[-1]["seconds"]
    return {
        "curve": curve,
        "train_seconds": seconds,
        "final_accuracy": curve[-1]["accuracy"],
        "final_accuracy_without_tta": curve[-1]["accuracy_without_tta"],
        "images_per_second": round(steps * hyper.batch_size / seconds, 1),
        "precision": "bf16",
        "peak_rss_mb": peak_rss_mb(),
        "steps": steps,
        "hyper": dataclasses.asdict(hyper),
    }
