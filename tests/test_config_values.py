"""Every recipe value is checked where it is declared, and whatever a recipe holds is written back readable."""

from __future__ import annotations

import contextlib
import dataclasses
import tomllib
import typing
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from convscope.config import (
    _TYPED_SECTIONS,
    OptimConfig,
    Recipe,
    TrainConfig,
    load_recipe,
    read_toml,
    recipe_from_dict,
    to_toml,
    validated,
    write_recipe_toml,
)
from convscope.errors import UserError
from tests.cli_helpers import cli, one_error_line

# (key, value as typed after --set, a fragment the error must hold besides the key)
BAD_VALUES = [
    ("optim.lr", "inf", "finite"),
    ("optim.lr", "nan", "finite"),
    ("optim.weight_decay", "inf", "finite"),
    ("optim.div_factor", "inf", "finite"),
    ("optim.linear_lr", "-1.0", ">= 0"),
    ("data.valid_fraction", "nan", "finite"),
    ("data.valid_fraction", "1.0", "[0, 1)"),
    ("data.test_fraction", "-0.1", "[0, 1)"),
    ("data.subset", "-1", ">= 0"),
    ("data.eval_batch_size", "0", ">= 1"),
    ("data.max_len", "0", ">= 1"),
    ("train.epochs", "1e20", "expected an integer"),
    ("train.epochs", "100001", "[1, 100000]"),
    ("train.seed", "-1", "[0, 2**63)"),
    ("train.seed", str(2**63), "64 bits"),
    ("train.batch_size", str(2**70), "64 bits"),
    ("train.grad_clip", "inf", "finite"),
    ("train.divergence_factor", "inf", "finite"),
    ("augment.pca_color", "inf", "finite"),
    ("augment.crop_padding", "100000", "[0, 4096]"),
    ("transfer.finetune_lr_factor", "inf", "finite"),
    ("data.image_size", "1979-05-27", "date"),
    ("data.classes", "[1979-05-27]", "date"),
    ("data.name", "{a = 1}", "table"),
    ("train.seed", "07:32:00", "date or time"),
    ("model.widths", "1979-05-27", "date"),
    ("model.widths", "[1, 1979-05-27T07:32:00]", "date"),
    ("model.widths", "{a = 1}", "table"),
    ("task.label_smoothing", "nan", "finite"),
    ("task.label_smoothing", "-inf", "finite"),
]


@pytest.mark.parametrize(("key", "value", "message"), BAD_VALUES)
def test_bad_override_is_refused_naming_the_key(key: str, value: str, message: str):
    with pytest.raises(UserError, match=key.replace(".", r"\.")) as caught:
        load_recipe(None, {key: value})
    assert message in str(caught.value)


@pytest.mark.parametrize(("key", "value", "message"), BAD_VALUES)
def test_bad_value_in_a_recipe_file_is_refused_naming_the_key(tmp_path: Path, key: str, value: str, message: str):
    section, _, field = key.partition(".")
    path = tmp_path / "bad.toml"
    path.write_text(f"[{section}]\n{field} = {value}\n", encoding="utf-8")
    with pytest.raises(UserError, match=key.replace(".", r"\.")) as caught:
        load_recipe(str(path))
    assert message in str(caught.value) and str(path) in str(caught.value)


@pytest.mark.parametrize(
    ("make", "key"),
    [
        (lambda: OptimConfig(lr=float("inf")), "optim.lr"),
        (lambda: OptimConfig(weight_decay=float("nan")), "optim.weight_decay"),
        (lambda: TrainConfig(epochs=10**20), "train.epochs"),
        (lambda: TrainConfig(seed=2**63), "train.seed"),
    ],
)
def test_the_sections_refuse_bad_values_built_from_python_too(make, key: str):
    with pytest.raises(UserError, match=key.replace(".", r"\.")):
        make()


def test_options_the_config_file_could_not_hold_are_refused_before_training():
    recipe = Recipe()
    recipe.model.options["widths"] = {"a": 1}  # as an API caller could set it
    with pytest.raises(UserError, match=r"model\.widths = .*table"):
        validated(recipe)
    recipe = Recipe()
    recipe.task.options["bad.name"] = 1
    with pytest.raises(UserError, match="not an option name"):
        validated(recipe)


@pytest.mark.parametrize("name", ["", "a/b", "..\\x", "tab\there"])
def test_a_run_name_that_is_no_folder_name_is_refused(name: str):
    with pytest.raises(UserError, match="name = "):
        validated(Recipe(name=name))


def test_undecodable_command_line_text_is_refused():
    with pytest.raises(UserError, match="not valid Unicode"):
        load_recipe(None, {"description": "caf\udce9"})  # os.fsdecode's form of a Latin-1 byte in argv


def test_a_date_on_the_command_line_is_one_error_line(capsys: pytest.CaptureFixture):
    code, _, err = cli(capsys, "train", "--set", "model.widths=1979-05-27", "--print-config")
    assert code == 2
    assert "model.widths = 1979-05-27 (a TOML date or time)" in one_error_line(err)


def test_a_description_with_control_characters_is_written_as_valid_toml(tmp_path: Path, capsys):
    text = 'a\nb\t"c"\\d\x00\x1b\x7f é'
    recipe = load_recipe(None, {"description": '"a\\nb\\t\\"c\\"\\\\d\\u0000\\u001b\\u007f é"'})
    assert recipe.description == text
    path = tmp_path / "config.toml"  # what a run directory holds
    write_recipe_toml(recipe, path)
    assert recipe_from_dict(read_toml(path), source=str(path)) == recipe
    code, out, _ = cli(capsys, "train", "--set", 'description="a\\nb"', "--print-config")
    assert code == 0 and tomllib.loads(out)["description"] == "a\nb"


def test_keys_toml_cannot_write_bare_are_quoted():
    assert tomllib.loads(to_toml({"a b": 1, "t": {"x.y": "z", "é": 2}})) == {"a b": 1, "t": {"x.y": "z", "é": 2}}


# ------------------------------------------------------------------ round trip over generated recipes

_INTS = st.one_of(st.integers(0, 20), st.integers(-(2**63), 2**63 - 1))
_FLOATS = st.one_of(st.floats(0, 1, exclude_max=True), st.floats(allow_nan=False, allow_infinity=False))
_BY_TYPE: dict[Any, st.SearchStrategy] = {
    str: st.text(max_size=20),
    int: _INTS,
    float: _FLOATS,
    bool: st.booleans(),
    list[str]: st.lists(st.text(max_size=8), max_size=3),
    list[int]: st.lists(_INTS, max_size=2),
    int | list[int]: st.one_of(_INTS, st.lists(st.integers(1, 64), min_size=2, max_size=2)),
}
_OPTION_VALUES = st.recursive(
    st.one_of(st.text(max_size=10), _INTS, _FLOATS.filter(lambda x: x == x), st.booleans()),
    lambda inner: st.lists(inner, max_size=3),
    max_leaves=6,
)
_OPTIONS = st.dictionaries(
    st.from_regex(r"[a-z_][a-z0-9_]{0,8}", fullmatch=True).filter(lambda k: k != "name"), _OPTION_VALUES, max_size=3
)
_FIELDS = [
    (section, f.name, typing.get_type_hints(type(getattr(Recipe(), section)))[f.name])
    for section in _TYPED_SECTIONS
    for f in dataclasses.fields(getattr(Recipe(), section))
]


@st.composite
def recipes(draw: st.DrawFn) -> Recipe:
    """A valid recipe: random text at the top, random options, and random values for random fields, each kept
    when its section accepts it (a value out of range leaves the field as it was)."""
    recipe = Recipe(
        name=draw(st.text(min_size=1, max_size=12).filter(lambda s: s.isprintable() and not set(s) & set("/\\"))),
        description=draw(st.text(max_size=40)),
        made_for=draw(st.text(min_size=1, max_size=12)),
    )
    recipe.model.options.update(draw(_OPTIONS))
    recipe.task.options.update(draw(_OPTIONS))
    for section, name, hint in draw(st.lists(st.sampled_from(_FIELDS), max_size=12)):
        value = draw(_BY_TYPE[hint])
        with contextlib.suppress(UserError):
            setattr(recipe, section, dataclasses.replace(getattr(recipe, section), **{name: value}))
    return validated(recipe)


@settings(max_examples=80, deadline=None)
@given(recipes())
def test_what_is_written_reads_back_equal(recipe: Recipe):
    text = to_toml(recipe.to_dict())
    assert recipe_from_dict(tomllib.loads(text), source="config.toml") == recipe
