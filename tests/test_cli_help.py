"""Help: every subcommand's examples and defaults, `recipes --keys` and `train --print-config`."""

from __future__ import annotations

import argparse
import dataclasses
import re
import shlex
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from convscope.cli import HelpFormatter, build_parser
from convscope.config import load_recipe, recipe_from_dict
from convscope.models import model_options
from convscope.recipe_keys import constructor_options, field_comments, section_classes, top_level_keys, typed_keys
from tests.cli_helpers import cli, one_error_line


def subcommands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """The command path of every subcommand, nested ones (`data import`) included, with its parser."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*path, name), sub
                yield from subcommands(sub, (*path, name))


SUBCOMMANDS = list(subcommands(build_parser()))


def test_the_walk_finds_nested_subcommands():
    paths = [path for path, _ in SUBCOMMANDS]
    assert ("train",) in paths and ("recipes",) in paths and ("data", "import") in paths


@pytest.mark.parametrize(("path", "parser"), SUBCOMMANDS, ids=[" ".join(p) for p, _ in SUBCOMMANDS])
def test_every_subcommand_has_examples_that_parse(path: tuple[str, ...], parser: argparse.ArgumentParser):
    text = parser.format_help()
    assert "\nexamples:\n" in text, f"`convscope {' '.join(path)} --help` has no examples: epilog=examples(...)"
    lines = text.split("\nexamples:\n", 1)[1].splitlines()
    commands = [line.strip() for line in lines if line.startswith("  convscope ")]
    assert 1 <= len(commands) <= 3, text
    for command in commands:
        words = shlex.split(command)[1:]
        assert tuple(words[: len(path)]) == path, f"example {command!r} is not of `convscope {' '.join(path)}`"
        build_parser().parse_args(words)  # a real command: a usage mistake raises UserError


@pytest.mark.parametrize(("path", "parser"), SUBCOMMANDS, ids=[" ".join(p) for p, _ in SUBCOMMANDS])
def test_every_option_shows_its_default(path: tuple[str, ...], parser: argparse.ArgumentParser):
    assert isinstance(parser.formatter_class, type) and issubclass(parser.formatter_class, HelpFormatter)
    text = "".join(parser.format_help().split())  # no whitespace: argparse wraps lines, at hyphens too
    assert "(default:None)" not in text
    formatter = parser._get_formatter()
    for action in parser._actions:
        if not action.option_strings or action.required or isinstance(action.default, bool) or action.default == []:
            continue  # positionals, required options, on/off flags, repeatable ones (--set), --help
        if isinstance(action, argparse._VersionAction | argparse._HelpAction):
            continue
        shown = formatter._expand_help(action) if action.help else ""
        assert "default" in shown, f"{' '.join(path)} {action.option_strings[0]}: help {shown!r} names no default"
        if action.default not in (None, []):
            assert "".join(shown.split()) in text


def test_defaults_are_printed_by_the_formatter(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["report", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "test images for the trust figures (default: 50)" in text
    assert "examples: convscope report runs/c10" in text


def test_every_top_level_key_has_a_description():
    keys = top_level_keys()
    assert {"name", "description"} <= {k.key for k in keys}
    for key in keys:
        assert key.help, f"recipe key {key.key} has no comment beside or above its field in config.Recipe"


def test_every_typed_field_has_a_description():
    for section, cls in section_classes().items():
        comments = field_comments(cls)
        for f in dataclasses.fields(cls):
            assert comments[f.name], f"{section}.{f.name} has no comment beside or above it: write one line"


@dataclass
class _Example:
    plain: int = 1  # the line beside it
    # the block above,
    # joined
    above: str = "x"
    both: bool = False  # beside wins
    listed: list[int] = field(default_factory=list)  # a factory's field
    # a comment cut off by a blank line

    nothing: float = 0.0


def test_field_comments_rules():
    assert field_comments(_Example) == {
        "plain": "the line beside it",
        "above": "the block above, joined",
        "both": "beside wins",
        "listed": "a factory's field",
        "nothing": "",
    }


def _constructor(num_classes: int, width: int, depth: int = 2, norm: str | None = None, **extra: object) -> None:
    """A registered constructor's shape: an input the data sets, a required option, defaults, a None, **kwargs."""


def test_constructor_options_read_the_signature():
    assert constructor_options(_constructor, ("num_classes",)) == [
        ("width", "int", "required"),
        ("depth", "int", "2"),
        ("norm", "str | None", "unset"),
    ]


def test_recipes_keys_lists_every_key_with_type_default_and_line(capsys):
    code, out, _ = cli(capsys, "recipes", "--keys")
    assert code == 0
    lines = {line.split()[0]: " ".join(line.split()[1:]) for line in out.splitlines() if line.startswith("  ")}
    keys = [*top_level_keys(), *typed_keys()]
    assert {k.key for k in keys} >= {"train.early_stopping", "train.patience", "data.name", "optim.lr"}
    for key in keys:
        assert lines[key.key] == " ".join(f"{key.type} {key.default} {key.help}".split())
    stopping = lines["train.early_stopping"]
    assert stopping.startswith('str "none" ') and "seed001" in stopping and "patience" in stopping
    assert lines["train.epochs"].startswith("int 10 ")
    for section in ("[data]", "[augment]", "[optim]", "[train]", "[transfer]", "[task]", "[model]"):
        assert f"\n{section}\n" in out
    assert "`convscope recipes --keys --recipe R`" in out  # how to see the task's and model's options


def test_recipes_keys_with_a_recipe_lists_its_task_and_model_options(capsys):
    code, out, _ = cli(capsys, "recipes", "--keys", "--recipe", "fashion-mnist")
    assert code == 0
    assert 'model.name = "fastnet-small" in recipe fashion-mnist' in out
    for option in model_options("fastnet-small"):
        assert f"  model.{option} " in out
    assert "model.num_classes" not in out and "model.in_channels" not in out  # the data sets those
    smoothing = next(line for line in out.splitlines() if "task.label_smoothing" in line)
    assert smoothing.split()[1:] == ["float", "0.0", "the", "recipe", "sets", "0.2"]


def test_recipes_recipe_without_keys_is_an_error(capsys):
    code, _, err = cli(capsys, "recipes", "--recipe", "fashion-mnist")
    assert code == 2 and "--keys" in one_error_line(err)


def test_print_config_prints_the_resolved_recipe_and_trains_nothing(capsys, tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = cli(capsys, "train", "--print-config", "--recipe", "fashion-mnist", "--set", "train.epochs=7")
    assert code == 0, err
    printed = tomllib.loads(out)
    assert printed["train"]["epochs"] == 7 and printed["model"]["name"] == "fastnet-small"
    expected = load_recipe("fashion-mnist", {"train.epochs": "7"})
    assert recipe_from_dict(printed, source="printed").to_dict() == expected.to_dict()
    assert list(tmp_path.iterdir()) == []  # no runs/ folder, nothing written


def test_print_config_of_a_bad_override_is_the_one_line_error(capsys, tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = cli(capsys, "train", "--print-config", "--set", "train.epochs=many")
    assert code == 2 and re.search(r"train\.epochs.*integer", one_error_line(err))


def test_print_config_is_toml_alone_on_stdout_notes_on_stderr(capsys, tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = cli(capsys, "train", "--print-config", "--data", "imagefolder:photos")
    assert code == 0, err
    assert tomllib.loads(out)["data"]["name"] == "imagefolder:photos"
    assert "note:" in err
