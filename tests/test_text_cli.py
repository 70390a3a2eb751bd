"""Texts end to end: train a character CNN on a tiny CSV, predict, evaluate, explain; bad input."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from convscope import api
from convscope.cli import main
from convscope.data.sources.text import spanish_names_dir
from convscope.errors import UserError
from convscope.explain.text import explain_texts, log_odds
from tests.cli_helpers import cli, one_error_line

# The spanish-names recipe (task text, model char-cnn) shrunk for a tiny CSV.
QUICK = ["--recipe", "spanish-names", "--epochs", "2", "--batch-size", "16", "--quiet",
         "--set", "data.eval_batch_size=64", "--set", "model.conv_width=16", "--set", "model.fc_width=16"]  # fmt: skip


def names_csv(path: Path, n: int = 96) -> Path:
    """Made-up names whose class is their last letter (a: f, o: m), in the columns ``nombre`` and ``sexo``."""
    rng = random.Random(0)
    names: set[str] = set()
    while len(names) < n:  # unique, so that no duplicate is merged away
        stem = "".join(rng.choice("bcdlmnrst") + rng.choice("aeiu") for _ in range(rng.randint(1, 3)))
        names.add(stem + rng.choice("ao"))
    lines = ["id,nombre,sexo"] + [f"{i},{name},{'f' if name[-1] == 'a' else 'm'}" for i, name in enumerate(names)]
    path.write_text("\n".join(lines) + "\n")
    return path


def columns(path: Path) -> list[str]:
    return ["--data", f"textcsv:{path}", "--set", "data.text_column=nombre", "--set", "data.label_column=sexo"]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("texts")
    out = root / "run"
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv("CONVSCOPE_HOME", str(root / "home"))
        assert main(["train", *QUICK, *columns(names_csv(root / "names.csv")), "--out", str(out)]) == 0
    return out


def test_train_records_the_vocabulary_and_the_split(run: Path):
    info = json.loads((run / "run.json").read_text())
    assert info["classes"] == ["f", "m"] and info["model"] == "char-cnn"
    assert info["sizes"] == {"train": 77, "valid": 19, "test": 19}  # the seed's 80/20 random_split
    assert info["vocabulary"] == "." + "".join(sorted("bcdlmnrstaeiuo")) and info["max_len"] == 22
    assert info["texts"]["rows"] == 96 and info["texts"]["label_weight"] == "number of rows"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["task"] == "text" and 0.0 <= summary["test_accuracy"] <= 1.0
    assert (run / "plots" / "history.png").is_file() and (run / "model.safetensors").is_file()


def test_predict_prints_every_class_for_each_text(capsys, run: Path):
    code, out, err = cli(capsys, "predict", run, "Marta", "tuco", "tuco salamanca")
    assert code == 0, err
    lines = out.splitlines()
    assert [line.split()[0] for line in lines] == ["Marta", "tuco", "tuco"]
    for line in lines:
        assert line.index("f: ") < line.index("m: ")  # every class, in class order
    code, out, err = cli(capsys, "predict", run, "maria", "--json")
    assert code == 0, err
    (result,) = json.loads(out)
    assert [t["class"] for t in result["top"]] == ["f", "m"]
    assert sum(t["p"] for t in result["top"]) == pytest.approx(1.0, abs=1e-5)
    assert api.predict(run, ["maria"], topk=1)[0][0][0] in ("f", "m")


def test_evaluate_the_validation_split(capsys, run: Path):
    code, _, err = cli(capsys, "evaluate", run)
    assert code == 0, err
    assert json.loads((run / "eval.json").read_text())["images"] == 19


def test_explain_texts(run: Path, tmp_path: Path):
    loaded = api.load_run(run)
    figure = tmp_path / "explain.png"
    results = explain_texts(loaded, ["Marta", "tucosalamanca"], figure)
    assert figure.is_file() and figure.stat().st_size > 0
    context = loaded.recipe.model.options["context"]
    for result, text in zip(results, ["marta", "tucosalamanca"], strict=True):
        assert result["encoded"].startswith("." + text) and len(result["encoded"]) == 23
        assert result["predicted"] == max(result["probabilities"], key=result["probabilities"].get)
        scores = [g["score"] for g in result["ngrams"]]
        assert scores == sorted(scores, reverse=True) and scores
        for g in result["ngrams"]:
            assert g["ngram"] == result["encoded"][g["start"] : g["start"] + context]
        assert "".join(c["character"] for c in result["characters"]) == text
    # Integrated gradients are complete: the attributions add up to the change of the log-odds from the
    # all-boundary baseline, up to the convergence delta captum reports.
    tokens = loaded.modality.load_inputs(loaded.recipe, loaded.info, ["tucosalamanca"], loaded.device)
    with torch.no_grad():
        odds = log_odds(loaded.model(torch.cat([tokens, torch.zeros_like(tokens)])))
    predicted = loaded.classes.index(results[1]["predicted"])
    change = (odds[0, predicted] - odds[1, predicted]).item()
    total = sum(c["attribution"] for c in results[1]["characters"])
    assert total - change == pytest.approx(results[1]["attribution_delta"], abs=1e-4)


def test_explain_texts_needs_a_char_cnn(run: Path):
    loaded = api.load_run(run)
    loaded.model.features = torch.nn.Identity()
    with pytest.raises(UserError, match="char-cnn"):
        explain_texts(loaded, ["maria"])


def test_bad_text_input(capsys, run: Path, tmp_path: Path):
    no_columns = tmp_path / "no-columns.csv"
    no_columns.write_text("name,gender\nmaria,f\njose,m\n")
    one_class = tmp_path / "one-class.csv"
    one_class.write_text("id,nombre,sexo\n1,maria,f\n2,marta,f\n3,ana,f\n")
    cases = [
        (["predict", run, "maria", ""], "input text '' is empty"),
        (["predict", run, "@#!"], "input text '@#!' has no character of the training vocabulary"),
        (["train", *QUICK, *columns(no_columns), "--out", tmp_path / "a"], "no column 'nombre' (data.text_column)"),
        (["train", *QUICK, *columns(one_class), "--out", tmp_path / "b"], "label column 'sexo'"),
        (["train", *QUICK, "--data", "textcsv:" + str(tmp_path / "none.csv"), "--out", tmp_path / "c"], "none.csv"),
        (["predict", run, "maria", "--topk", "0"], "topk = 0"),
    ]
    for argv, fragment in cases:
        code, _, err = cli(capsys, *argv)
        assert code == 2, argv
        assert fragment in one_error_line(err), (argv, err)


def test_unknown_characters_are_dropped_with_a_warning(capsys, run: Path):
    code, out, err = cli(capsys, "predict", run, "maría")
    assert code == 0
    assert "dropped 1 characters outside the training vocabulary: 'í'" in err
    assert out.startswith("maría")


def _spanish_names_present() -> bool:
    try:
        spanish_names_dir()
    except UserError:
        return False
    return True


@pytest.mark.slow
@pytest.mark.skipif(not _spanish_names_present(), reason="the spanish-names CSVs are not here")
def test_real_spanish_names_subset_trains_well_above_chance(capsys, tmp_path: Path):
    out = tmp_path / "names"
    code, stdout, err = cli(capsys, "train", "--recipe", "spanish-names", "--out", out, "--epochs", "2",
                            "--set", "data.subset=6000", "--quiet")  # fmt: skip
    assert code == 0, err
    assert "653 under several classes: 649 keep the class of larger INE frequency, 4 ties dropped" in stdout
    info = json.loads((out / "run.json").read_text())
    assert info["sizes"]["valid"] == info["sizes"]["test"] == 9736 and info["classes"] == ["female", "male"]
    assert info["texts"]["rows"] == 24_584 + 24_756
    summary = json.loads((out / "summary.json").read_text())
    assert summary["test_accuracy"] > 0.8  # chance is about 0.5
