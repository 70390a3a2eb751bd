"""Fuzz tests: whatever bytes or values reach convscope's readers, the answer is a result or a ``UserError``.

Hypothesis generates the inputs: arbitrary recipe tables and recipe files (any bytes, any encoding),
``--set KEY=VALUE`` strings for the real keys, a trained run directory whose files are replaced by garbage or
by truncated and bit-flipped copies of themselves, and image files likewise. Any other exception is a bug: the
command line would print a traceback instead of one ``error:`` line.

``make test`` runs a small budget (a few seconds); ``make fuzz`` (``HYPOTHESIS_PROFILE=fuzz``) runs
:data:`FUZZ_SCALE` times as many inputs and prints how many were tried.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import shutil
import tomllib
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from convscope import api
from convscope.cli import main
from convscope.config import (
    _NAMED_SECTIONS,
    _TYPED_SECTIONS,
    RECIPES_DIR,
    Recipe,
    load_recipe,
    parse_value,
    recipe_from_dict,
    to_toml,
)
from convscope.data.images import decode_image, load_images, probe_image
from convscope.engine.checkpoint import load_checkpoint
from convscope.errors import UserError
from convscope.recipe_keys import top_level_keys, typed_keys
from tests.data.helpers import make_image, make_imagefolder

settings.register_profile(
    "convscope-ci", deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
settings.register_profile("fuzz", settings.get_profile("convscope-ci"), print_blob=True)
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "convscope-ci")
FUZZ_SCALE = 50 if PROFILE == "fuzz" else 1

TRIED: Counter[str] = Counter()  # inputs tried per property, printed at the end of the module


def budget(examples: int) -> settings:
    """``examples`` inputs under ``make test``, :data:`FUZZ_SCALE` times as many under ``make fuzz``."""
    return settings(settings.get_profile(PROFILE), max_examples=examples * FUZZ_SCALE)


@pytest.fixture(scope="module", autouse=True)
def count_inputs(request: pytest.FixtureRequest) -> Iterator[None]:
    """Say how many inputs the module tried (on the terminal, past pytest's output capture)."""
    yield
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None and TRIED:
        total = sum(TRIED.values())
        each = ", ".join(f"{name} {count}" for name, count in sorted(TRIED.items()))
        with capture.global_and_fixture_disabled():
            reporter.write_line(f"fuzz: {total} inputs tried (profile {PROFILE}): {each}")


def succeeds_or_user_error(name: str, call: Callable[[], Any]) -> Any:
    """The property: ``call()`` returns, or raises :class:`UserError` with a one-line message; None for the error."""
    TRIED[name] += 1
    try:
        return call()
    except UserError as exc:
        message = str(exc)
        assert message and "\n" not in message.strip() and "Traceback" not in message, message
        return None


# --- generated values -------------------------------------------------------------------------------------------

# Everything TOML can hold: strings with any characters, 64-bit integers, floats with inf and nan, dates and times.
TOML_SCALARS = st.one_of(
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.integers(-3, 300),
    st.floats(),
    st.text(max_size=12),
    st.dates(),
    st.times(),
    st.datetimes(timezones=st.none() | st.just(dt.UTC)),
)
TOML_VALUES = st.recursive(
    TOML_SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
SECTION_FIELDS = {
    section: [f.name for f in dataclasses.fields(type(getattr(Recipe(), section)))] for section in _TYPED_SECTIONS
}
TOP_LEVEL = [key.key for key in top_level_keys()]
# Free options of [model] and [task]: some real ones, some not.
NAMED_OPTIONS = ["name", "widths", "depth", "dropout", "in_channels", "pretrained", "label_smoothing", "nope"]
# The real keys `--set` takes.
REAL_KEYS = [key.key for key in typed_keys()] + TOP_LEVEL + [f"{s}.{o}" for s in _NAMED_SECTIONS for o in NAMED_OPTIONS]


def section_table(section: str) -> st.SearchStrategy[dict[str, Any]]:
    fields = SECTION_FIELDS.get(section, NAMED_OPTIONS)
    return st.dictionaries(st.sampled_from(fields) | st.text(max_size=6), TOML_VALUES, max_size=4)


RECIPE_ENTRIES = st.one_of(
    st.sampled_from([*_TYPED_SECTIONS, *_NAMED_SECTIONS]).flatmap(lambda s: st.tuples(st.just(s), section_table(s))),
    st.tuples(st.sampled_from([*_TYPED_SECTIONS, *_NAMED_SECTIONS, *TOP_LEVEL]), TOML_VALUES),
    st.tuples(st.text(max_size=6), TOML_VALUES),
)
RECIPE_DICTS = st.lists(RECIPE_ENTRIES, max_size=5).map(dict)

# What a user might type after `--set key=`: TOML literals that are hard to hold, numbers and free text.
TRICKY_LITERALS = [
    "inf", "-inf", "+inf", "nan", "-nan", "1e20", "1e400", "-1", "0", "-0.0", "9223372036854775808", "1979-05-27",
    "1979-05-27T07:32:00Z", "07:32:00", "{a = 1}", "{}", "[]", "[1, 2]", "[[1], [2]]", '"a\\nb"', '"a\\u0000b"',
    "'literal'", '"""multi\nline"""', "true", "True", "", " ", "=", "0x10", "0o7", "0b1", "1_000", '"\\x"', "[1,",
]  # fmt: skip
SET_VALUES = st.one_of(
    st.sampled_from(TRICKY_LITERALS),
    st.integers().map(str),
    st.floats().map(repr),
    st.text(max_size=16),
    st.tuples(st.sampled_from(TRICKY_LITERALS), st.text(max_size=4)).map("".join),
)


def mutations(base: bytes) -> st.SearchStrategy[bytes]:
    """Damaged copies of ``base``: truncated, bits flipped, a slice replaced by other bytes."""
    size = len(base)

    def flip(edits: list[tuple[int, int]]) -> bytes:
        damaged = bytearray(base)
        for index, bit in edits:
            damaged[index % size] ^= 1 << bit
        return bytes(damaged)

    def splice(edit: tuple[int, int, bytes]) -> bytes:
        start, stop, insert = edit
        start, stop = min(start, stop), max(start, stop)
        return base[:start] + insert + base[stop:]

    return st.one_of(
        st.integers(0, size - 1).map(lambda end: base[:end]),
        st.lists(st.tuples(st.integers(0, size - 1), st.integers(0, 7)), min_size=1, max_size=6).map(flip),
        st.tuples(st.integers(0, size), st.integers(0, size), st.binary(max_size=16)).map(splice),
    )


def round_trips(recipe: Recipe) -> None:
    """What convscope writes as config.toml reads back as the same recipe (point 2 of issue 22)."""
    text = to_toml(recipe.to_dict())
    again = recipe_from_dict(tomllib.loads(text), source="config.toml")
    assert to_toml(again.to_dict()) == text


# --- the recipe parser and --set ----------------------------------------------------------------------------------


@budget(150)
@given(RECIPE_DICTS)
def test_recipe_tables_load_or_say_why(data: dict[str, Any]):
    recipe = succeeds_or_user_error("recipe tables", lambda: recipe_from_dict(data, source="fuzz.toml"))
    if recipe is not None:
        round_trips(recipe)


SHIPPED = sorted(RECIPES_DIR.glob("*.toml"))
RECIPE_BYTES = st.one_of(
    st.binary(max_size=200),
    st.sampled_from(SHIPPED).flatmap(lambda path: mutations(path.read_bytes())),
    st.tuples(
        st.sampled_from(SHIPPED), st.sampled_from(["utf-16", "utf-32", "latin-1", "cp1252", "utf-8-sig", "shift_jis"])
    ).map(
        lambda pair: pair[0].read_text().replace('description = "', 'description = "Café ✓ ').encode(pair[1], "replace")
    ),
)


@budget(100)
@given(RECIPE_BYTES)
def test_recipe_files_of_any_bytes_load_or_say_why(tmp_path: Path, content: bytes):
    path = tmp_path / "fuzz.toml"
    path.write_bytes(content)
    recipe = succeeds_or_user_error("recipe files", lambda: load_recipe(str(path)))
    if recipe is not None:
        round_trips(recipe)


@budget(200)
@given(st.sampled_from(REAL_KEYS), SET_VALUES)
def test_set_key_value_applies_or_says_why(key: str, raw: str):
    succeeds_or_user_error("--set values", lambda: parse_value(raw))
    recipe = succeeds_or_user_error("--set values", lambda: load_recipe(None, {key: raw}))
    if recipe is not None:
        round_trips(recipe)


# --- the run-directory readers ------------------------------------------------------------------------------------

RUN_FILES = ["run.json", "config.toml", "model.safetensors", "checkpoints/last.pt"]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny trained run (lenet5, one epoch on 16 images) for the whole module."""
    root = tmp_path_factory.mktemp("fuzz-run")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CONVSCOPE_HOME", str(root / "home"))
        folder = make_imagefolder(root / "pets", ("cat", "dog"), per_class=8, size=(32, 32))
        argv = ["train", "--data", f"imagefolder:{folder}", "--out", str(root / "run"), "--model", "lenet5"]
        assert main([*argv, "--epochs", "1", "--batch-size", "4", "--precision", "fp32", "--quiet"]) == 0
    return root / "run"


@pytest.fixture
def scratch_run(trained_run: Path, tmp_path: Path) -> Path:
    """A copy of the trained run this test may damage (each example restores what it damaged)."""
    return Path(shutil.copytree(trained_run, tmp_path / "run"))


def read_everything(run_dir: Path, name: str) -> None:
    """What the commands read from a run directory: the recipe, the model (evaluate, predict, explain, report,
    export) and, for --resume, the last checkpoint."""
    if name == "checkpoints/last.pt":
        load_checkpoint(run_dir / name)
        return
    api.read_run_recipe(run_dir)
    api.load_run(run_dir, device="cpu")


@pytest.mark.parametrize("name", RUN_FILES)
@budget(25)
@given(data=st.data())
def test_damaged_run_files_read_or_say_why(scratch_run: Path, name: str, data: st.DataObject):
    path = scratch_run / name
    original = path.read_bytes()
    content = data.draw(st.binary(max_size=300) | mutations(original), label=name)
    path.write_bytes(content)
    try:
        succeeds_or_user_error(f"run {name}", lambda: read_everything(scratch_run, name))
    finally:
        path.write_bytes(original)


# --- the image decoders -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """Real files of the formats torchvision decodes (PNG, JPEG, grey and colour) and two PIL reads (BMP, TIFF)."""
    root = tmp_path_factory.mktemp("fuzz-images")
    files = {"rgb.png": "RGB", "grey.png": "L", "rgba.png": "RGBA", "rgb.jpg": "RGB", "grey.jpg": "L",
             "rgb.bmp": "RGB", "rgb.tif": "RGB"}  # fmt: skip
    return {name: make_image(root / name, size=(12, 10), mode=mode).read_bytes() for name, mode in files.items()}


@budget(150)
@given(data=st.data())
def test_damaged_images_decode_or_say_why(tmp_path: Path, real_images: dict[str, bytes], data: st.DataObject):
    name = data.draw(st.sampled_from(sorted(real_images)), label="format")
    content = data.draw(st.binary(max_size=200) | mutations(real_images[name]), label="bytes")
    path = tmp_path / name
    path.write_bytes(content)
    good = tmp_path / f"good-{name}"
    good.write_bytes(real_images[name])
    for call in (
        lambda: probe_image(path),
        lambda: decode_image(path, 1),
        lambda: decode_image(path, 3),
        lambda: load_images([good, path]),
        lambda: load_images([path, good], skip_bad=True, size=(8, 8)),
    ):
        succeeds_or_user_error("images", call)
