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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from convscope.checks import check_count, check_fraction, check_number, check_numbers
from convscope.data.augment import AugmentConfig
from convscope.data.datamodule import check_label_fraction, check_normalize, requested_size
from convscope.data.images import check_resize
from convscope.engine.config import OptimConfig, TrainConfig
from convscope.engine.finetune import TransferConfig
from convscope.errors import UserError

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
