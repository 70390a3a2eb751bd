"""Recipes: configuration as typed, plain data (the nanoGPT pattern, done as a function).

A recipe is a TOML file with one table per section. Resolution order is
defaults <- recipe file <- command-line overrides (``--set section.field=value``),
each value type-checked against the dataclass field it lands in; unknown sections
and keys are errors that name them.

``[model]`` and ``[task]`` carry a ``name`` plus free options that are checked
against the constructor's signature when it is called.
"""

from __future__ import annotations

import dataclasses
import datetime
import tomllib
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from convscope.checks import INT64_LIMIT, MAX_EPOCHS, check_count, check_fraction, check_number, check_numbers
from convscope.errors import UserError

# ---- [data] checks (the data modules use them too) ----

NORMALIZATIONS = ("data", "imagenet")
RESIZE_MODES = ("crop", "squash", "pad")


def check_normalize(normalize: str) -> None:
    if normalize not in NORMALIZATIONS:
        raise UserError(f"data.normalize = {normalize!r}: expected one of: {', '.join(NORMALIZATIONS)}")


def requested_size(value: int | Sequence[int]) -> tuple[int, int] | None:
    """``data.image_size`` as (height, width), or None for the data's own size (0)."""
    sides = [value] if isinstance(value, int) else list(value)
    if sides == [0]:
        return None
    if len(sides) not in (1, 2) or not all(isinstance(v, int) and 1 <= v <= 4096 for v in sides):
        raise UserError(
            f"data.image_size = {value!r}: expected 0 (the data's own size), an integer in [1, 4096] or [height, width]"
        )
    return (sides[0], sides[-1])


def check_label_fraction(fraction: float) -> None:
    if not 0 < fraction <= 1:
        raise UserError(f"data.label_fraction = {fraction}: expected a fraction in (0, 1] of the training labels")


def check_resize(mode: str) -> None:
    if mode not in RESIZE_MODES:
        raise UserError(f"data.resize = {mode!r}: expected one of {', '.join(RESIZE_MODES)}")


# ---- [augment] ----

# augment.crop_padding_mode -> torch.nn.functional.pad's mode
CROP_PADDING_MODES = {"reflect": "reflect", "zeros": "constant"}
HFLIP_MODES = ("random", "alternate")


@dataclass
class AugmentConfig:
    """Training augmentation; zero or False leaves a step out."""

    crop_padding: int = 0  # random crop of the image size after padding each side by N pixels
    crop_padding_mode: str = "reflect"  # reflect | zeros (torchvision's RandomCrop, as seed 000 uses it)
    hflip: bool = False  # mirror left-right with probability 0.5
    # random: each image of each batch drawn anew; alternate: airbench's alternating flip, each training image
    # mirrored in every other epoch (a random half of them in the even epochs, the others in the odd ones)
    hflip_mode: str = "random"
    vflip: bool = False  # flip upside down with probability 0.5
    rotation: float = 0.0  # rotate by an angle uniform in [-N, N] degrees (zeros outside)
    center_crop: int = 0  # crop the centre N x N (training and evaluation alike)
    pca_color: float = 0.0  # AlexNet's PCA colour noise: std of the per-component weights (AlexNet: 0.1)

    def __post_init__(self) -> None:
        check_numbers("augment", self)
        # Beyond 4096 pixels (data.image_size's bound) a pad or crop is a typo, and would allocate without end.
        check_count("augment.crop_padding", self.crop_padding, 0, 4096)
        if self.crop_padding_mode not in CROP_PADDING_MODES:
            raise UserError(f"augment.crop_padding_mode = {self.crop_padding_mode!r}: expected one of "
                            f"{', '.join(CROP_PADDING_MODES)}")  # fmt: skip
        if self.hflip_mode not in HFLIP_MODES:
            raise UserError(f"augment.hflip_mode = {self.hflip_mode!r}: expected one of {', '.join(HFLIP_MODES)}")
        if not 0.0 <= self.rotation <= 180.0:
            raise UserError(f"augment.rotation = {self.rotation}: expected degrees in [0, 180]")
        check_count("augment.center_crop", self.center_crop, 0, 4096)
        if not self.pca_color >= 0:
            raise UserError(f"augment.pca_color = {self.pca_color}: expected a standard deviation >= 0 (0: off)")


# ---- [optim], [train] ----

OPTIMIZERS = ("sgd", "adam", "adamw", "muon")
SCHEDULERS = ("none", "onecycle", "cosine", "step", "linear")
PRECISIONS = ("fp32", "bf16")
DEVICES = ("auto", "cpu", "cuda", "mps")
EARLY_STOPPING = ("none", "first-drop", "patience")
# Old names recipes may still give: train.early_stopping = "seed001" is "first-drop" (seed 001's rule).
EARLY_STOPPING_ALIASES = {"seed001": "first-drop"}
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
    # none | first-drop (stop when the monitored value gets worse than the previous epoch's; seed001, its old name,
    # still reads) | patience
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
        self.early_stopping = EARLY_STOPPING_ALIASES.get(self.early_stopping, self.early_stopping)
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


@dataclass
class TransferConfig:
    """The recipe's ``[transfer]`` section."""

    init: str = ""  # start from: a run directory, a .pth or .safetensors file, or torchvision:NAME, timm:NAME
    freeze_epochs: int = 0  # phase 1: epochs (out of train.epochs) training the head on a frozen backbone
    unfreeze_at: float = 0.0  # or phase 1 as a fraction of train.epochs (seed 002 froze half: 0.5)
    finetune_lr_factor: float = 0.1  # phase 2's optim.lr, and so its schedule's peak, is optim.lr times this
    layer_lr_decay: float = 1.0  # phase 2: each earlier backbone stage gets this factor of the next one's lr
    # Phase 2 too keeps the backbone's batch-norm running statistics (mmdetection's norm_eval): with few images
    # per batch they are a noisier estimate than the ones the weights came with.
    freeze_bn_stats: bool = False

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        check_numbers("transfer", self)
        if self.freeze_epochs < 0:
            raise UserError(f"transfer.freeze_epochs = {self.freeze_epochs}: expected an integer >= 0")
        if not 0.0 <= self.unfreeze_at < 1.0:
            raise UserError(f"transfer.unfreeze_at = {self.unfreeze_at}: expected a fraction in [0, 1)")
        if self.freeze_epochs and self.unfreeze_at:
            raise UserError("transfer.freeze_epochs and transfer.unfreeze_at both set: give one of them")
        if not self.finetune_lr_factor > 0:
            raise UserError(f"transfer.finetune_lr_factor = {self.finetune_lr_factor}: expected a number > 0")
        if not 0.0 < self.layer_lr_decay <= 1.0:
            raise UserError(f"transfer.layer_lr_decay = {self.layer_lr_decay}: expected a number in (0, 1]")

    def frozen_epochs(self, epochs: int) -> int:
        frozen = self.freeze_epochs or round(self.unfreeze_at * epochs)
        if frozen > epochs:
            raise UserError(f"transfer.freeze_epochs = {frozen} is more than train.epochs = {epochs}")
        return frozen


RECIPES_DIR = Path(__file__).parent / "recipes"


@dataclass
class DataConfig:
    name: str = "fashion-mnist"  # a data set spec: fashion-mnist, cifar10, imagefolder:PATH, csv:PATH, ...
    valid_fraction: float = 0.1  # of the training split, stratified, chosen by the run's seed
    test_fraction: float = 0.1  # held out (with a fixed seed) only when the source has no test split
    skip_bad: bool = False  # skip corrupt images (text rows without a text or label) instead of stopping
    subset: int = 0  # train on a random N of the training images (quick experiments); 0 = all
    eval_batch_size: int = 1024  # examples per forward pass of validation, test, evaluate and predict
    # Images: train on some classes only (in this order; labels renumbered), and N training images of each.
    classes: list[str] = field(default_factory=list)  # train on these classes only, in this order; empty: all
    per_class: int = 0  # N random training images per class before the valid split, by the run's seed; 0 = all
    label_fraction: float = 1.0  # or this fraction of each class's training images (stratified, by the seed)
    # Images: the size the network takes, an integer (square) or [height, width]; 0: the data's own (a folder of
    # files: their most common size, its longer side scaled down to at most 256)
    image_size: int | list[int] = 0
    resize: str = "crop"  # how other shapes reach image_size: crop (scale, centre crop) | squash | pad (with black)
    normalize: str = "data"  # data: the training split's channel mean and std | imagenet: ImageNet's (pretrained)
    # Texts (textcsv:PATH, spanish-names). The valid_fraction split, drawn with seed 0, is also the test split.
    text_column: str = "text"  # textcsv: the column holding the texts
    label_column: str = "label"  # textcsv: the column holding the classes
    max_len: int = 22  # characters kept per text (longer ones are truncated), after a start token
    lowercase: bool = True  # texts: lowercase them (training texts and predict inputs alike)

    def __post_init__(self) -> None:
        check_numbers("data", self)
        check_fraction("data.valid_fraction", self.valid_fraction)
        check_fraction("data.test_fraction", self.test_fraction)
        check_count("data.subset", self.subset, 0)
        check_count("data.eval_batch_size", self.eval_batch_size, 1)
        check_count("data.per_class", self.per_class, 0)
        check_count("data.max_len", self.max_len, 1)
        check_label_fraction(self.label_fraction)
        requested_size(self.image_size)
        check_resize(self.resize)
        check_normalize(self.normalize)


@dataclass
class NamedConfig:
    """A ``name`` plus constructor options (``[model]``, ``[task]``)."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class Recipe:
    name: str = "custom"  # names the run (runs/NAME-TIME) and its summary.json
    description: str = ""  # one line, shown by `convscope recipes` and in the report
    task: NamedConfig = field(default_factory=lambda: NamedConfig("classify"))
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: NamedConfig = field(default_factory=lambda: NamedConfig("fastnet"))
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    transfer: TransferConfig = field(default_factory=TransferConfig)
    # The data set the recipe file was written for (its own data.name); a run on other data says "recipe X on
    # data Y" and resets the settings that do not carry over (convscope.adapt).
    made_for: str = ""
    # The keys given on the command line (--set and the flags): adapting the recipe to the data never touches them.
    explicit: set[str] = field(default_factory=set, compare=False, repr=False)

    @property
    def on_other_data(self) -> bool:
        """Whether the run's data is not the one the recipe was written for (``made_for = "any"``: any data)."""
        return self.made_for not in ("any", self.data.name)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "description": self.description, "made_for": self.made_for}
        for section in ("task", "model"):
            named: NamedConfig = getattr(self, section)
            out[section] = {"name": named.name, **named.options}
        for section in _TYPED_SECTIONS:
            out[section] = dataclasses.asdict(getattr(self, section))
        return out


_TYPED_SECTIONS = ("data", "augment", "optim", "train", "transfer")
_NAMED_SECTIONS = ("task", "model")


def list_recipes() -> list[tuple[str, str]]:
    """(name, description) of the recipes shipped with convscope."""
    rows = []
    for path in sorted(RECIPES_DIR.glob("*.toml")):
        with path.open("rb") as f:
            rows.append((path.stem, tomllib.load(f).get("description", "")))
    return rows


def recipe_path(name_or_file: str) -> Path:
    """A shipped recipe's name, or a path to a TOML file."""
    path = Path(name_or_file)
    if path.suffix == ".toml":
        if not path.is_file():
            raise UserError(f"recipe file '{path}' does not exist")
        return path
    shipped = RECIPES_DIR / f"{name_or_file}.toml"
    if not shipped.is_file():
        known = ", ".join(name for name, _ in list_recipes())
        raise UserError(f"unknown recipe {name_or_file!r}; expected a .toml file or one of: {known}")
    return shipped


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"recipe '{path}' is not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:  # TOML is UTF-8 by definition
        raise UserError(f"recipe '{path}' is not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset "
                        f"{exc.start}); save it as UTF-8") from None  # fmt: skip
    except OSError as exc:
        raise UserError(f"recipe '{path}' cannot be read ({exc.strerror or exc})") from None


def load_recipe(name_or_file: str | None, overrides: dict[str, str] | None = None) -> Recipe:
    """Resolve a recipe: defaults <- file <- overrides (``section.field`` -> string value)."""
    recipe = Recipe()
    if name_or_file is not None:
        path = recipe_path(name_or_file)
        recipe = recipe_from_dict(read_toml(path), source=str(path), default_name=path.stem)
    recipe.made_for = recipe.made_for or recipe.data.name  # the defaults' own data, without a file
    for key, raw in (overrides or {}).items():
        apply_override(recipe, key, raw)
    return validated(recipe)


def validated(recipe: Recipe) -> Recipe:
    """Run each section's own checks (``__post_init__``) on the values set field by field, and refuse what the
    run's config.toml could not hold: a recipe that trains can always be read back (evaluate, --resume)."""
    for section in _TYPED_SECTIONS:
        setattr(recipe, section, dataclasses.replace(getattr(recipe, section)))
    for key in ("name", "description", "made_for"):
        _check_type(getattr(recipe, key), str, key)
    if not recipe.name or any(c in recipe.name for c in "/\\") or not recipe.name.isprintable():
        raise UserError(f"name = {recipe.name!r}: expected a run name without '/', '\\' or control characters")
    for section in _NAMED_SECTIONS:
        named: NamedConfig = getattr(recipe, section)
        _check_type(named.name, str, f"{section}.name")
        for option, value in named.options.items():
            if not option.isidentifier():  # a constructor's keyword, and a bare TOML key
                raise UserError(f"{section}.{option}: {option!r} is not an option name (letters, digits and _)")
            _check_option(value, f"{section}.{option}")
    return recipe


def _check_option(value: Any, key: str) -> None:
    """A free option of [model] or [task]: a string, number, boolean, or a list of them (nested lists too)."""
    if isinstance(value, list | tuple):
        for item in value:
            _check_option(item, key)
    elif isinstance(value, bool | int | float | str):
        _check_type(value, type(value), key)
    else:
        raise UserError(f"{key} = {_shown(value)}: expected a string, a number, true/false or a list of them")


def recipe_from_dict(data: dict[str, Any], *, source: str, default_name: str = "custom") -> Recipe:
    recipe = Recipe(name=data.get("name", default_name), description=data.get("description", ""))
    for key, value in data.items():
        where = f"{source}: {key}"
        if key in ("name", "description", "made_for"):
            setattr(recipe, key, _check_type(value, str, where))
        elif key in _NAMED_SECTIONS:
            value = _expect_table(value, where)
            named: NamedConfig = getattr(recipe, key)
            if "name" in value:
                named.name = _check_type(value["name"], str, f"{where}.name")
            for option, option_value in value.items():
                if option != "name":
                    _check_option(option_value, f"{where}.{option}")
                    named.options[option] = option_value
        elif key in _TYPED_SECTIONS:
            section = getattr(recipe, key)
            for field_name, field_value in _expect_table(value, where).items():
                _set_field(section, key, field_name, field_value, source)
        else:
            known = ", ".join(("name", "description", "made_for", *_NAMED_SECTIONS, *_TYPED_SECTIONS))
            raise UserError(f"{source}: unknown recipe section {key!r}; expected one of: {known}")
    recipe.made_for = recipe.made_for or recipe.data.name
    try:
        return validated(recipe)
    except UserError as exc:  # a range check of the section: say which file holds the value
        message = str(exc)
        raise UserError(message if message.startswith(source) else f"{source}: {message}") from None


def apply_override(recipe: Recipe, key: str, raw: str) -> None:
    """Apply ``--set section.field=value``; the value is read as TOML, else taken as a string."""
    value = parse_value(raw)
    section_name, _, field_name = key.partition(".")
    recipe.explicit.add(key)
    if key in ("name", "description"):
        setattr(recipe, key, value if isinstance(value, str) else raw)  # `description=5`: the text as typed
        return
    if not field_name:
        raise UserError(f"--set {key}: expected section.field, e.g. train.epochs=5")
    if section_name in _NAMED_SECTIONS:
        named: NamedConfig = getattr(recipe, section_name)
        if field_name == "name":
            named.name = _check_type(value, str, f"--set {key}")
        else:
            _check_option(value, f"--set {key}")
            named.options[field_name] = value
        return
    if section_name not in _TYPED_SECTIONS:
        known = ", ".join((*_NAMED_SECTIONS, *_TYPED_SECTIONS))
        raise UserError(f"--set {key}: unknown section {section_name!r}; expected one of: {known}")
    _set_field(getattr(recipe, section_name), section_name, field_name, value, "--set")


def parse_value(raw: str) -> Any:
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def _expect_table(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise UserError(f"{where}: expected a table, got {value!r}")
    return value


def _set_field(section: Any, section_name: str, field_name: str, value: Any, source: str) -> None:
    fields = {f.name: f for f in dataclasses.fields(section)}
    if field_name not in fields:
        known = ", ".join(fields)
        raise UserError(f"{source}: unknown key {section_name}.{field_name!r}; expected one of: {known}")
    hints = typing.get_type_hints(type(section))
    setattr(section, field_name, _check_type(value, hints[field_name], f"{source}: {section_name}.{field_name}"))


def _check_type(value: Any, expected: Any, where: str) -> Any:
    """Check ``value`` against a simple annotation (str, int, float, bool, list[...], X | None)."""
    origin = typing.get_origin(expected)
    if origin in (typing.Union, types.UnionType):
        errors = []
        for option in typing.get_args(expected):
            if option is type(None):
                if value is None:
                    return None
                continue
            try:
                return _check_type(value, option, where)
            except UserError as exc:
                errors.append(str(exc))
        raise UserError(errors[0] if errors else f"{where}: unexpected value {value!r}")
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise UserError(f"{where}: expected a list, got {value!r}")
        (item_type, *_) = typing.get_args(expected) or (Any,)
        items = [v if item_type is Any else _check_type(v, item_type, where) for v in value]
        return items if origin is list else tuple(items)
    if expected is Any:
        return value
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
        names = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
        raise UserError(f"{where}: expected {names.get(expected, expected.__name__)}, got {_shown(value)}")
    if isinstance(value, str) and not _is_unicode(value):
        raise UserError(f"{where}: {value!r} is not valid Unicode text (undecodable bytes)")
    check_number(where, value)
    return value


def _shown(value: Any) -> str:
    """A wrong value as the user wrote it, with what TOML made of it when that is not obvious."""
    if isinstance(value, datetime.date | datetime.time):
        return f"{value.isoformat()} (a TOML date or time)"
    if isinstance(value, dict):
        return f"{value!r} (a TOML table)"
    return repr(value)


def _is_unicode(text: str) -> bool:
    """False for text holding lone surrogates (bytes that were not UTF-8, as os.fsdecode keeps them)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def write_recipe_toml(recipe: Recipe, path: Path) -> None:
    """Write the resolved recipe (what the run actually used) as TOML."""
    path.write_text(to_toml(recipe.to_dict()), encoding="utf-8")  # TOML is UTF-8 whatever the locale


def to_toml(data: dict[str, Any]) -> str:
    scalars = [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in data.items() if not isinstance(v, dict)]
    tables = [
        f"\n[{_toml_key(k)}]\n"
        + "\n".join(f"{_toml_key(kk)} = {_toml_value(vv)}" for kk, vv in v.items() if vv is not None)
        for k, v in data.items()
        if isinstance(v, dict)
    ]
    return "\n".join(scalars) + "\n" + "\n".join(tables) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


# TOML basic strings: these characters have short escapes; every other control character is written \uXXXX.
_SHORT_ESCAPES = {"\\": "\\\\", '"': '\\"', "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def _toml_string(text: str) -> str:
    """``text`` as a TOML basic string: backslash, quote and control characters (U+0000-U+001F, U+007F) escaped."""
    out = []
    for char in text:
        if char in _SHORT_ESCAPES:
            out.append(_SHORT_ESCAPES[char])
        elif char < " " or char == "\x7f":
            out.append(f"\\u{ord(char):04X}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def _toml_key(key: str) -> str:
    """A bare key when TOML allows one (letters, digits, _ and -), else a quoted one."""
    bare = key and all(c.isascii() and (c.isalnum() or c in "_-") for c in key)
    return key if bare else _toml_string(key)
