"""Training configuration as plain typed data: each dataclass becomes a section of a recipe TOML.

Only simple field types (str, int, float, bool, list[float], list[str]) so a recipe can set every field.
``validate()`` checks values against what the engine accepts; it runs on construction and again
when the Trainer starts, because the recipe loader may set fields one at a time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from convscope.checks import INT64_LIMIT, MAX_EPOCHS, check_count, check_numbers
from convscope.errors import UserError

OPTIMIZERS = ("sgd", "adam", "adamw", "muon")
SCHEDULERS = ("none", "onecycle", "cosine", "step", "linear")
PRECISIONS = ("fp32", "bf16")
DEVICES = ("auto", "cpu", "cuda", "mps")
EARLY_STOPPING = ("none", "seed001", "patience")
LOGGERS = ("csv", "tensorboard")
MONITOR_MODES = ("max", "min")


def _choice(section: str, field: str, value: str, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise UserError(f"{section}.{field} = {value!r} is not one of: {', '.join(allowed)}")


def _at_least(section: str, field: str, value: float, low: float) -> None:
    if not value >= low:  # written so that NaN fails too
        raise UserError(f"{section}.{field} = {value!r} must be >= {low}")


def _in_range(section: str, field: str, value: float, low: float, high: float) -> None:
    """low <= value < high."""
    if not low <= value < high:
        raise UserError(f"{section}.{field} = {value!r} must be in [{low}, {high})")


@dataclass
class OptimConfig:
    name: str = "adamw"  # sgd | adam | adamw | muon (Muon for conv filters, SGD for the rest: engine/muon.py)
    lr: float = 1e-3  # base lr; the peak lr for onecycle; muon: the conv filters' lr
    # sgd, adam: L2 penalty; adamw: decoupled decay; muon: the fraction of each weight and bias taken off per step
    # at the full lr (decoupled; filters get none)
    weight_decay: float = 0.0
    momentum: float = 0.9  # sgd momentum / beta1 of adam(w); onecycle cycles it 0.95 -> 0.85 -> 0.95 instead
    nesterov: bool = False  # Nesterov momentum (sgd, and the SGD part of muon)
    beta2: float = 0.999  # adam(w): decay of the squared-gradient average
    muon_momentum: float = 0.6  # muon: the filters' (Nesterov) momentum; `momentum` is the SGD part's
    linear_lr: float = 0.0  # muon: lr of the 2-D weights (linear layers, the classifier); required
    bias_lr: float = 0.0  # muon: lr of the 1-D parameters (biases, batch-norm shifts and scales); required
    scheduler: str = "none"  # none | onecycle | cosine | step | linear (to 0 after the warm-up)
    warmup_fraction: float = 0.0  # linear warm-up (cosine, step, linear), fraction of all steps
    pct_start: float = 0.3  # onecycle: fraction of steps spent raising the lr
    div_factor: float = 25.0  # onecycle: initial lr = lr / div_factor
    final_div_factor: float = 1e4  # onecycle: final lr = initial lr / final_div_factor
    step_epochs: int = 1  # step: decay every N epochs
    gamma: float = 0.1  # step: decay factor

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        s = "optim"
        check_numbers(s, self)
        _choice(s, "name", self.name, OPTIMIZERS)
        _choice(s, "scheduler", self.scheduler, SCHEDULERS)
        if not self.lr > 0:
            raise UserError(f"optim.lr = {self.lr!r} must be > 0")
        _at_least(s, "weight_decay", self.weight_decay, 0.0)
        _in_range(s, "momentum", self.momentum, 0.0, 1.0)
        _in_range(s, "beta2", self.beta2, 0.0, 1.0)
        if self.nesterov and (self.name not in ("sgd", "muon") or self.momentum == 0):
            raise UserError("optim.nesterov = true needs optim.name = 'sgd' or 'muon' and optim.momentum > 0")
        _in_range(s, "muon_momentum", self.muon_momentum, 0.0, 1.0)
        _at_least(s, "linear_lr", self.linear_lr, 0.0)
        _at_least(s, "bias_lr", self.bias_lr, 0.0)
        if self.name == "muon":
            for field in ("linear_lr", "bias_lr"):
                if not getattr(self, field) > 0:
                    raise UserError(
                        f"optim.{field} = {getattr(self, field)!r}: optim.name = 'muon' needs it > 0 "
                        "(the SGD lr of the 2-D weights and of the biases; see recipes/cifar10.toml)"
                    )
        _in_range(s, "warmup_fraction", self.warmup_fraction, 0.0, 1.0)
        if not 0 < self.pct_start < 1:
            raise UserError(f"optim.pct_start = {self.pct_start!r} must be in (0, 1)")
        _at_least(s, "div_factor", self.div_factor, 1.0)
        _at_least(s, "final_div_factor", self.final_div_factor, 1.0)
        _at_least(s, "step_epochs", self.step_epochs, 1)
        if not 0 < self.gamma <= 1:
            raise UserError(f"optim.gamma = {self.gamma!r} must be in (0, 1]")


@dataclass
class TrainConfig:
    epochs: int = 10  # passes over the training split (transfer: both phases together)
    batch_size: int = 128  # training examples per step (per process with --nproc)
    precision: str = "fp32"  # fp32 | bf16 (autocast)
    channels_last: bool = False  # NHWC memory layout (faster convolutions with bf16 on recent CPUs and GPUs)
    device: str = "auto"  # auto | cpu | cuda | mps
    seed: int = 0  # the valid split, shuffling, augmentation and initialisation
    deterministic: bool = False  # torch.use_deterministic_algorithms
    grad_clip: float = 0.0  # max gradient norm; 0 = off
    log_every: int = 50  # steps between log lines when there is no bar
    window: int = 0  # moving-average window of step logs; 0 = 5% of an epoch (seed 004)
    checkpoint_every: int = 0  # also checkpoint every N steps (0: only at epoch ends)
    # none | seed001 (stop when the monitored value gets worse than the previous epoch's) | patience
    early_stopping: str = "none"
    patience: int = 3  # epochs without improvement before stopping (early_stopping = "patience")
    monitor: str = "accuracy"  # a validation metric name: picks best.pt and drives early stopping
    monitor_mode: str = "max"  # max | min
    quiet: bool = False  # no bar and no step lines: only one line per epoch
    # Stop a phase whose loss is not finite or whose moving average exceeds this many times its best (and its
    # start), keeping the last good weights (engine/divergence.py); 0: only the non-finite check
    divergence_factor: float = 4.0
    # csv | tensorboard: where the metrics go besides the screen. metrics.csv is always written (resume, plots and
    # reports read it), so "csv" only makes that explicit; "tensorboard" adds event files (engine/tensorboard.py).
    loggers: list[str] = field(default_factory=lambda: ["csv"])

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        s = "train"
        check_numbers(s, self)
        check_count("train.epochs", self.epochs, 1, MAX_EPOCHS)
        if not 0 <= self.seed < INT64_LIMIT:  # what torch.Generator.manual_seed takes
            raise UserError(f"train.seed = {self.seed!r}: expected an integer in [0, 2**63)")
        _at_least(s, "batch_size", self.batch_size, 1)
        _choice(s, "precision", self.precision, PRECISIONS)
        _choice(s, "device", self.device, DEVICES)
        _at_least(s, "grad_clip", self.grad_clip, 0.0)
        _at_least(s, "log_every", self.log_every, 1)
        _at_least(s, "window", self.window, 0)
        _at_least(s, "checkpoint_every", self.checkpoint_every, 0)
        _choice(s, "early_stopping", self.early_stopping, EARLY_STOPPING)
        _at_least(s, "patience", self.patience, 1)
        _choice(s, "monitor_mode", self.monitor_mode, MONITOR_MODES)
        if not (self.divergence_factor == 0 or self.divergence_factor > 1):
            raise UserError(f"train.divergence_factor = {self.divergence_factor!r} must be 0 (off) or > 1")
        if not self.monitor:
            raise UserError("train.monitor is empty; name a validation metric such as 'accuracy' or 'loss'")
        if isinstance(self.loggers, str):
            raise UserError(f"train.loggers = {self.loggers!r}: expected a list such as ['csv', 'tensorboard']")
        for name in self.loggers:
            _choice(s, "loggers", name, LOGGERS)
