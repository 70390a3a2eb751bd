"""`convscope lr-find` end to end on a tiny learnable image folder: the figure, the JSON, the printed
suggestion, nothing else written; Muon's three lrs; bad input."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.cli_helpers import cli, one_error_line

# fp32 so results do not depend on the CPU's bf16 support; a small net and batch for a few steps.
QUICK = ["--model", "fastnet-small", "--batch-size", "8", "--set", "train.precision=fp32", "--set",
         "train.channels_last=false", "--steps", "20", "--start-lr", "1e-3", "--end-lr", "100"]  # fmt: skip
LINE = re.compile(r"^suggested lr: (\S+) \(steepest descent of the smoothed loss\); set it with --lr (\S+)(.*)$", re.M)


def colour_folder(root: Path, per_class: int = 10) -> Path:
    """Two classes told apart by colour (reddish / bluish noise), so the loss can fall."""
    rng = np.random.default_rng(0)
    for label, name in enumerate(("red", "blue")):
        for index in range(per_class):
            image = rng.integers(0, 120, (8, 8, 3), dtype=np.uint8)
            image[..., 0 if label == 0 else 2] += 120
            (root / name).mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(root / name / f"{index:03d}.png")
    return root


@pytest.fixture
def folder(tmp_path: Path) -> str:
    return f"imagefolder:{colour_folder(tmp_path / 'colours')}"


def test_lr_find_writes_the_plot_and_json_and_prints_the_suggestion(
    capsys, folder: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    code, out, err = cli(capsys, "lr-find", "--data", folder, *QUICK)
    assert code == 0, err
    assert sorted(p.name for p in work.iterdir()) == ["lr_find.json", "lr_find.png"]  # no run directory
    assert (work / "lr_find.png").read_bytes()[:4] == b"\x89PNG"
    result = json.loads((work / "lr_find.json").read_text())
    assert result["rule"] == "steepest descent of the smoothed loss" and result["optimizer"] == "sgd"
    assert len(result["lrs"]) == len(result["losses"]) == len(result["smoothed"]) == result["steps_run"] <= 20
    assert result["lrs"][0] == pytest.approx(1e-3)
    suggestion = result["suggestion"]
    assert 1e-3 <= suggestion["lr"] < result["minimum"]["lr"]
    match = LINE.search(out)
    assert match, out
    assert match.group(1) == match.group(2) and match.group(3) == ""
    assert float(match.group(1)) == pytest.approx(suggestion["lr"], rel=0.01)
    assert "note: the onecycle schedule is not used" in out  # the recipe's schedule, said to be set aside


def test_muon_scales_its_three_lrs_together(capsys, folder: str, tmp_path: Path):
    muon = ["optim.name=muon", "optim.lr=0.24", "optim.linear_lr=5.0", "optim.bias_lr=0.4", "optim.nesterov=true",
            "optim.scheduler=none"]  # fmt: skip
    out_file = tmp_path / "figures" / "muon.png"
    code, out, err = cli(capsys, "lr-find", "--data", folder, *QUICK, *(a for s in muon for a in ("--set", s)),
                         "--out", out_file)  # fmt: skip
    assert code == 0, err
    assert "note: muon: optim.linear_lr (5) and optim.bias_lr (0.4) are scaled with optim.lr" in out
    result = json.loads(out_file.with_suffix(".json").read_text())
    found = result["suggestion"]["settings"]
    factor = result["suggestion"]["lr"] / 0.24
    assert found["optim.linear_lr"] == pytest.approx(5.0 * factor, rel=0.01)
    assert found["optim.bias_lr"] == pytest.approx(0.4 * factor, rel=0.01)
    match = LINE.search(out)
    assert match, out
    assert (
        match.group(3)
        == f" --set optim.linear_lr={found['optim.linear_lr']:g} --set optim.bias_lr={found['optim.bias_lr']:g}"
    )


def test_bad_lr_find_inputs_are_one_error_line(capsys, folder: str, tmp_path: Path):
    for args, expected in (
        (["--start-lr", "1", "--end-lr", "0.1"], "--start-lr 1 and --end-lr 0.1"),
        (["--steps", "1"], "--steps 1"),
        (["--out", str(tmp_path / "lr.txt")], "lr.txt: expected a figure file"),
    ):
        code, _, err = cli(capsys, "lr-find", "--data", folder, *args)
        assert code == 2
        assert expected in one_error_line(err)
    assert not (tmp_path / "lr.txt").exists()


def test_a_recipe_that_freezes_the_backbone_is_tested_as_its_phase_1(capsys, folder: str, tmp_path: Path):
    """Frozen, the untrained fastnet backbone passes on features of ~1e-5, so the head alone cannot move the loss
    off ln 2 at any lr (the same data learns with the backbone training, above): no suggestion, said in one error
    line, with the figure and JSON written to look at."""
    frozen = ["--set", "transfer.freeze_epochs=1", "--set", "train.epochs=2"]
    code, out, err = cli(capsys, "lr-find", "--data", folder, *QUICK, *frozen, "--out", tmp_path / "frozen.png")
    assert code == 2
    assert "note: transfer freezes the backbone first: the test trains the head on it, as phase 1 does" in out
    assert "the smoothed loss never fell below its first value" in one_error_line(err)
    result = json.loads((tmp_path / "frozen.json").read_text())
    assert result["suggestion"] is None and result["losses"] == pytest.approx([math.log(2)] * 20, abs=1e-3)
