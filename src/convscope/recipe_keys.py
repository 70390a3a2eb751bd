"""Every key a recipe can set, with its type, default and one line: `convscope recipes --keys`.

The lines are the comments written beside each dataclass field (``name: str = "x"  # what it is``), or, for a
field without one, the comment lines right above it, read from the source with :mod:`tokenize`. So the help
cannot drift from the code: there is no second copy to keep in step, and a field added without a comment
has an empty line here, which ``tests/test_cli_help.py`` catches. ``[task]`` and ``[model]`` take free
options: those of the chosen constructor, read from its signature.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import io
import textwrap
import tokenize
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from convscope.config import _NAMED_SECTIONS, _TYPED_SECTIONS, Recipe, to_toml

UNSET = "unset"  # how a None default reads (a TOML file cannot hold None; constructors use it for "off")


@dataclass(frozen=True)
class Key:
    """One settable key."""

    key: str  # section.field, or a top-level name
    type: str
    default: str  # as it would be written in a recipe, or "unset"
    help: str


def section_classes() -> dict[str, type]:
    """The typed sections (``[data]``, ``[augment]``, ...) and their dataclasses, in recipe order."""
    recipe_fields = {f.name: f for f in dataclasses.fields(Recipe)}
    return {name: recipe_fields[name].default_factory for name in _TYPED_SECTIONS}  # type: ignore[misc]


@functools.cache
def field_comments(cls: type) -> dict[str, str]:
    """``{field: its comment}`` for a dataclass: the comment on the field's line, else the comment block above it.

    A field with neither maps to "". Comment lines are joined with spaces; the leading ``#`` is dropped.
    """
    source = textwrap.dedent(inspect.getsource(cls))
    comments: dict[int, tuple[str, bool]] = {}  # line -> (text, whether the line holds only the comment)
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            alone = not token.line[: token.start[1]].strip()
            comments[token.start[0]] = (token.string.lstrip("#").strip(), alone)
    (node,) = ast.parse(source).body
    assert isinstance(node, ast.ClassDef)
    found = {}
    for statement in node.body:
        if not (isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name)):
            continue
        trailing = comments.get(statement.end_lineno or statement.lineno)
        if trailing and not trailing[1]:
            found[statement.target.id] = trailing[0]
            continue
        above, line = [], statement.lineno - 1
        while line in comments and comments[line][1]:
            above.insert(0, comments[line][0])
            line -= 1
        found[statement.target.id] = " ".join(above)
    return found


def typed_keys() -> list[Key]:
    """The keys of the typed sections, each with the type, default and comment of its dataclass field."""
    keys = []
    for section, cls in section_classes().items():
        hints = typing.get_type_hints(cls)
        comments = field_comments(cls)
        for f in dataclasses.fields(cls):
            default = f.default_factory() if f.default is dataclasses.MISSING else f.default  # type: ignore[misc]
            keys.append(Key(f"{section}.{f.name}", _type_name(hints[f.name]), _value(default), comments[f.name]))
    return keys


def top_level_keys() -> list[Key]:
    """The recipe's own keys outside any section (``name``, ``description``, ...): those a config.toml holds."""
    hints, comments = typing.get_type_hints(Recipe), field_comments(Recipe)
    return [
        Key(name, _type_name(hints[name]), _value(value), comments[name])
        for name, value in Recipe().to_dict().items()
        if not isinstance(value, dict)
    ]


def constructor_options(fn: Callable[..., Any], fixed: tuple[str, ...]) -> list[tuple[str, str, str]]:
    """(option, type, default) of a registered constructor's keyword options; ``fixed`` are those the data sets."""
    rows = []
    for name, parameter in inspect.signature(fn).parameters.items():
        if name in fixed or parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        annotation = parameter.annotation
        if annotation is parameter.empty:
            kind = ""
        else:  # a string under `from __future__ import annotations`
            kind = annotation if isinstance(annotation, str) else _type_name(annotation)
        default = "required" if parameter.default is parameter.empty else _value(parameter.default)
        rows.append((name, kind, default))
    return rows


def named_keys(recipe: Recipe, section: str) -> list[Key]:
    """The options of the recipe's task or model (``section``), each marked where the recipe sets it."""
    from convscope.models import INPUT_ARGUMENTS, MODELS
    from convscope.tasks import TASKS

    named = getattr(recipe, section)
    if section == "task":
        fn, fixed = TASKS.get(named.name), ("num_classes",)  # what build_task passes itself
    else:
        fn, fixed = MODELS.get(named.name), INPUT_ARGUMENTS
    keys = []
    for option, kind, default in constructor_options(fn, fixed):
        given = f"the recipe sets {_value(named.options[option])}" if option in named.options else ""
        keys.append(Key(f"{section}.{option}", kind, default, given))
    return keys


def describe_keys(recipe: Recipe | None = None, recipe_name: str = "") -> str:
    """The text of `convscope recipes --keys [--recipe R]`: every key, grouped by section.

    ``recipe`` (named ``recipe_name``) lists its task's and model's options; without it, how to see them.
    """
    top, typed = top_level_keys(), typed_keys()
    named = {section: named_keys(recipe, section) for section in _NAMED_SECTIONS} if recipe is not None else {}
    rows = [*top, *typed, *(k for keys in named.values() for k in keys)]
    widths = [max(len(getattr(k, column)) for k in rows) for column in ("key", "type", "default")]

    def line(k: Key) -> str:
        return f"  {k.key:<{widths[0]}}  {k.type:<{widths[1]}}  {k.default:<{widths[2]}}  {k.help}".rstrip()

    out = [
        "Set any key in a recipe file or with --set KEY=VALUE; `convscope train --print-config` shows the values a",
        "run would use. Columns: key, type, default, what it does.",
        "",
        "(top level)",
        *map(line, top),
    ]
    for section in _TYPED_SECTIONS:
        out += ["", f"[{section}]", *(line(k) for k in typed if k.key.startswith(f"{section}."))]
    for section in _NAMED_SECTIONS:
        out += ["", f"[{section}]"]
        if recipe is not None:
            name = _value(getattr(recipe, section).name)
            out.append(f"  {section}.name = {name} in recipe {recipe_name}; its options:")
            out += [line(k) for k in named[section]] or ["  (none)"]
        else:
            name = _value(getattr(Recipe(), section).name)
            choices = "tasks: " + ", ".join(_task_names()) if section == "task" else "models: `convscope models`"
            out.append(
                f"  {section}.name (default {name}) and the options of that {section}, which "
                f"`convscope recipes --keys --recipe R` lists for recipe R ({choices})"
            )
    return "\n".join(out) + "\n"


def _task_names() -> list[str]:
    from convscope.tasks import TASKS

    return TASKS.names()


def _type_name(annotation: Any) -> str:
    """``int``, ``list[str]``, ``float | None``: the annotation as a user would write it."""
    if isinstance(annotation, type) and not typing.get_args(annotation):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def _value(value: Any) -> str:
    """A default as a recipe would write it (TOML), or "unset" for None."""
    if value is None:
        return UNSET
    return to_toml({"v": value}).strip().removeprefix("v = ")
