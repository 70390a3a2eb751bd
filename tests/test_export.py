"""Export to ONNX and TorchScript with the parity check, and batched inference on the fast path."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import onnxruntime
import pytest
import torch

from convscope import api
from convscope.api import export_run
from convscope.bench.inference import run_inference_study
from convscope.cli import main
from convscope.serve.export import load_torchscript, parity_inputs
from tests.cli_helpers import cli, one_error_line
from tests.data.helpers import make_imagefolder
from tests.test_cli import QUICK
from tests.test_text_cli import QUICK as TEXT_QUICK
from tests.test_text_cli import columns, names_csv


@pytest.fixture(scope="module")
def image_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("export")
    data = make_imagefolder(root / "pets", ("cat", "dog", "fox"), per_class=8, size=(16, 16), splits=("train", "test"))
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv("CONVSCOPE_HOME", str(root / "home"))
        # channels_last + bf16 in training: the export must still be a plain fp32 graph.
        argv = ["train", "--data", f"imagefolder:{data}", "--out", str(root / "run"), *QUICK, "--epochs", "1",
                "--set", "train.channels_last=true"]  # fmt: skip
        assert main(argv) == 0
    return root / "run"


@pytest.fixture(scope="module")
def text_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("export-text")
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv("CONVSCOPE_HOME", str(root / "home"))
        argv = ["train", *TEXT_QUICK, *columns(names_csv(root / "names.csv")), "--out", str(root / "run")]
        assert main([*argv, "--epochs", "1"]) == 0
    return root / "run"


def test_onnx_export_matches_the_eager_model_at_any_batch_size(capsys, image_run: Path, tmp_path: Path):
    out = tmp_path / "m.onnx"
    code, printed, err = cli(capsys, "export", image_run, "--format", "onnx", "--out", out)
    assert code == 0, err
    assert f"written {out}" in printed and "parity on 24 test examples" in printed  # 3 classes x 8

    model = onnx.load(str(out))
    meta = json.loads({p.key: p.value for p in model.metadata_props}["convscope"])
    assert meta["classes"] == ["cat", "dog", "fox"] and len(meta["mean"]) == 3 and meta["image_size"] == [16, 16]
    # A batch size the exporter never saw (it traced two examples).
    run = api.load_run(image_run, device="cpu")
    x = parity_inputs(run, 5)
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    logits = torch.from_numpy(session.run(None, {"inputs": x.numpy()})[0])
    with torch.no_grad():
        assert torch.allclose(logits, run.model(x), atol=1e-4)


def test_torchscript_export(image_run: Path, tmp_path: Path):
    result = export_run(image_run, "torchscript", tmp_path / "m.pt")
    assert result.max_abs_difference < 1e-5
    run = api.load_run(image_run, device="cpu")
    x = parity_inputs(run, 7)
    with torch.no_grad():
        assert torch.allclose(load_torchscript(result.path)(x), run.model(x), atol=1e-5)


def test_text_runs_export_too(text_run: Path):
    onnx_file = export_run(text_run, "onnx")  # default: next to the weights
    assert onnx_file.path == text_run / "model.onnx" and onnx_file.examples == 19
    assert onnx_file.max_abs_difference < 1e-4 and 0.0 <= onnx_file.agreement <= 1.0
    assert export_run(text_run, "torchscript").max_abs_difference < 1e-5


def test_batched_inference_does_not_change_results(image_run: Path):
    whole = api.evaluate(image_run)
    one_by_one = api.evaluate(image_run, batch_size=1, precision="fp32")
    assert one_by_one["inference"]["batch_size"] == 1 and whole["inference"]["channels_last"]
    assert one_by_one["confusion_matrix"] == whole["confusion_matrix"]  # fp32 both (QUICK), folded or not
    images = sorted(str(p) for p in (image_run.parent / "pets" / "test").rglob("*.png"))[:5]
    single = api.predict(image_run, images, batch_size=1)
    together = api.predict(image_run, images, batch_size=64)
    for a, b in zip(single, together, strict=True):
        assert [c for c, _ in a] == [c for c, _ in b]
        assert [p for _, p in a] == pytest.approx([p for _, p in b], abs=1e-5)


def test_bad_export_input(capsys, image_run: Path, tmp_path: Path):
    cases = [
        (["export", tmp_path / "no-run", "--format", "onnx"], "no-run"),
        (["export", image_run, "--format", "tflite"], "tflite"),
        (["export", image_run, "--format", "onnx", "--out", tmp_path], "directory"),
        (["export", image_run, "--format", "onnx", "--examples", "0"], "--examples"),
        (["evaluate", image_run, "--batch-size", "0"], "batch size 0"),
    ]
    for argv, fragment in cases:
        code, _, err = cli(capsys, *argv)
        assert code == 2, argv
        assert fragment in one_error_line(err), (argv, err)


def test_inference_benchmark_measures_three_systems(image_run: Path, tmp_path: Path):
    out = tmp_path / "inference.json"
    result = run_inference_study(out=out, overrides={}, results_dir=tmp_path, machine={}, run_dir=image_run)
    assert json.loads(out.read_text()) == result
    systems = result["systems"]
    assert set(systems) == {"fp32_eager", "convscope", "onnxruntime"} and result["test_images"] == 24
    for row in systems.values():
        assert row["images_per_second"] > 0 and 0.0 <= row["accuracy"] <= 1.0
    assert systems["fp32_eager"]["speedup"] == 1.0
    assert systems["onnxruntime"]["accuracy"] == systems["fp32_eager"]["accuracy"]  # the same fp32 function
    assert systems["convscope"]["settings"] == {
        "precision": "bf16", "channels_last": True, "batch_size": 512, "fold_batchnorm": True
    }  # fmt: skip
