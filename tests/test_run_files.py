"""Every damaged file of a run directory is one ``error:`` line naming it and what to do, exit 2, no traceback."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import pytest
import torch

from convscope.errors import UserError
from convscope.run import read_json, read_text, read_weights
from tests.cli_helpers import cli, one_error_line
from tests.data.helpers import make_imagefolder

TINY = ["--model", "fastnet-small", "--epochs", "1", "--batch-size", "8", "--precision", "fp32", "--quiet",
        "--set", "data.valid_fraction=0.25", "--set", "data.test_fraction=0.25"]  # fmt: skip


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """One tiny finished run (and its data) for the module; each test damages a copy."""
    root = tmp_path_factory.mktemp("run-files")
    data = make_imagefolder(root / "data", per_class=8, size=(16, 16))
    capture = pytest.MonkeyPatch()
    capture.setenv("CONVSCOPE_HOME", str(root / "home"))
    from convscope.cli import main

    try:
        assert main(["train", "--data", f"imagefolder:{data}", "--out", str(root / "run"), *TINY]) == 0
    finally:
        capture.undo()
    return root / "run", data


@pytest.fixture
def run(trained: tuple[Path, Path], tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(trained[0], copy)
    return copy


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: max(1, path.stat().st_size // 2)])


DAMAGE = {
    "truncated": _truncate,
    "empty": lambda p: p.write_bytes(b""),
    "not UTF-8": lambda p: p.write_bytes(b"\xff\xfe\x00garbage"),
    "a pickle": lambda p: p.write_bytes(pickle.dumps({"weights": [1, 2, 3]})),
    "a JSON list": lambda p: p.write_text("[1, 2]"),
}


def _error(capsys, *args: object) -> str:
    code, _, err = cli(capsys, *args)
    assert code == 2, err
    return one_error_line(err)


@pytest.mark.parametrize("damage", ["truncated", "empty", "a pickle", "not UTF-8"])
@pytest.mark.parametrize("command", ["evaluate", "export", "report"])
def test_a_damaged_model_file_is_one_line_naming_it_and_how_to_rewrite_it(capsys, run: Path, command, damage):
    DAMAGE[damage](run / "model.safetensors")
    extra = ["--format", "onnx"] if command == "export" else []
    line = _error(capsys, command, run, *extra)
    assert str(run / "model.safetensors") in line and "not a readable safetensors file" in line
    assert f"convscope train --resume --out {run}" in line


def test_train_resume_rewrites_a_damaged_model_file_from_the_checkpoints(capsys, run: Path, trained):
    _truncate(run / "model.safetensors")
    code, _, err = cli(capsys, "train", "--resume", "--out", run)
    assert code == 0, err
    code, _, err = cli(capsys, "predict", run, next((trained[1] / "cat").iterdir()))
    assert code == 0, err


@pytest.mark.parametrize("damage", ["truncated", "empty", "not UTF-8", "a JSON list"])
def test_a_damaged_run_json_is_one_line(capsys, run: Path, trained, damage):
    DAMAGE[damage](run / "run.json")
    line = _error(capsys, "predict", run, next((trained[1] / "dog").iterdir()))
    assert str(run / "run.json") in line and "restore it from a copy" in line


def test_a_run_json_without_its_keys_is_one_line_naming_them(capsys, run: Path):
    (run / "run.json").write_text('{"model": "lenet5"}')
    assert "lacks 'classes', 'sizes'" in _error(capsys, "evaluate", run)


@pytest.mark.parametrize("damage", ["truncated", "not UTF-8"])
@pytest.mark.parametrize("command", ["evaluate", "resume"])
def test_a_damaged_config_toml_is_one_line(capsys, run: Path, damage, command):
    config = run / "config.toml"
    if damage == "truncated":
        config.write_text(config.read_text() + "\n[optim\n")  # a section header cut short
    else:
        config.write_bytes(config.read_bytes().replace(b"#", b"\xe9", 1) + b"\n# caf\xe9\n")
    args = ["train", "--resume", "--out", run] if command == "resume" else ["evaluate", run]
    line = _error(capsys, *args)
    assert str(config) in line and ("not valid TOML" in line or "not UTF-8" in line)
    assert "restore it from a copy" in line


@pytest.mark.parametrize("damage", ["truncated", "not UTF-8", "a JSON list"])
def test_a_damaged_summary_json_stops_the_report_with_one_line(capsys, run: Path, damage):
    DAMAGE[damage](run / "summary.json")
    line = _error(capsys, "report", run, "--trust-images", "2")
    assert str(run / "summary.json") in line and "convscope train --resume" in line


@pytest.mark.parametrize("damage", ["truncated", "a pickle", "empty"])
def test_a_damaged_last_checkpoint_stops_resume_with_one_line(capsys, run: Path, damage):
    DAMAGE[damage](run / "checkpoints" / "last.pt")
    line = _error(capsys, "train", "--resume", "--out", run)
    assert str(run / "checkpoints" / "last.pt") in line and "another --out" in line


def test_a_damaged_metrics_table_stops_plot_with_one_line(capsys, run: Path):
    (run / "metrics.csv").write_text("split,epoch\ntrain,one\n")
    line = _error(capsys, "plot", run)
    assert str(run / "metrics.csv") in line and "metrics table" in line


def test_a_non_utf8_recipe_file_is_one_line(capsys, tmp_path: Path):
    recipe = tmp_path / "mine.toml"
    recipe.write_bytes(b'description = "caf\xe9"\n')
    line = _error(capsys, "train", "--recipe", recipe, "--print-config")
    assert str(recipe) in line and "not UTF-8" in line and "0xe9" in line


def test_a_recipe_that_cannot_be_read_is_one_line(capsys, tmp_path: Path):
    recipe = tmp_path / "folder.toml"
    recipe.mkdir()
    assert "does not exist" in _error(capsys, "train", "--recipe", recipe, "--print-config")


# ---- the readers themselves ---------------------------------------------------------------------


def test_read_json_names_what_is_wrong(tmp_path: Path):
    path = tmp_path / "eval.json"
    path.write_text('{"a": ')
    with pytest.raises(UserError, match=r"eval.json is not valid JSON .*delete it and run `convscope evaluate"):
        read_json(path)
    path.write_text("[" * 100_000)
    with pytest.raises(UserError, match=r"eval\.json is not valid JSON"):
        read_json(path)
    assert read_json(tmp_path / "absent.json", missing_ok=True) == {}
    with pytest.raises(UserError, match=r"absent\.json cannot be read"):
        read_json(tmp_path / "absent.json")


def test_read_text_refuses_other_encodings(tmp_path: Path):
    path = tmp_path / "config.toml"
    path.write_bytes("name = 'café'".encode("latin-1"))
    with pytest.raises(UserError, match=r"config.toml is not UTF-8 text \(byte 0xe9 at offset 11\)"):
        read_text(path)


def test_read_weights_refuses_a_pickle_under_the_safetensors_name(tmp_path: Path):
    path = tmp_path / "model.safetensors"
    torch.save({"w": torch.zeros(2)}, path)
    with pytest.raises(UserError, match=r"model\.safetensors is not a readable safetensors file"):
        read_weights(path)
