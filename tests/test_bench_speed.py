"""The speed benchmark: its systems train what they claim, its clock leaves evaluation out, its figures add up."""

import json
import time

import pytest
import torch
from safetensors.torch import load_file

from convscope.bench import speed as bench_speed
from convscope.bench import speed_systems
from convscope.bench.runs import bench_command
from convscope.errors import UserError
from tests.cli_helpers import cli, one_error_line
from tests.data.helpers import make_imagefolder


@pytest.fixture
def overrides(tmp_path) -> dict[str, str]:
    """Fashion-MNIST's recipe on a tiny generated folder: fastnet-small, 2 epochs of 3 batches, with the crops and
    flips the systems must draw alike (the recipe itself trains without augmentation)."""
    folder = make_imagefolder(tmp_path / "pets", ("cat", "dog"), per_class=12, size=(16, 16), splits=("train", "test"))
    return {"data.name": f"imagefolder:{folder}", "train.batch_size": "8", "train.epochs": "2",
            "augment.crop_padding": "2", "augment.hflip": "true"}  # fmt: skip


@pytest.mark.parametrize("stem", ["conv", "whiten"])
def test_bare_loop_trains_exactly_what_convscope_trains(stem, overrides, tmp_path):
    """The engine-overhead figure compares rates, so the two must run the same computation: same weights after
    (with the whitening stem, fitted to the same images)."""
    overrides = {**overrides, "model.stem": f'"{stem}"'}
    bare = speed_systems.prepare("fashion-mnist", overrides)
    speed_systems.run_bare(bare)
    engine = speed_systems.prepare("fashion-mnist", overrides)
    speed_systems.run_convscope(engine, tmp_path / "run")
    trained = load_file(tmp_path / "run" / "model.safetensors")
    for name, value in bare.model.state_dict().items():
        torch.testing.assert_close(trained[name], value, rtol=0, atol=1e-6, msg=name)
    assert [row["accuracy"] for row in bare.clock.curve] == [row["accuracy"] for row in engine.clock.curve]


@pytest.mark.parametrize("system", ["plain", "lightning"])
def test_other_systems_train_the_same_network_and_report_their_curve(system, overrides, tmp_path):
    pytest.importorskip("lightning") if system == "lightning" else None
    result = speed_systems.run_system(system, "fashion-mnist", overrides, tmp_path)
    assert [row["epoch"] for row in result["curve"]] == [1, 2]
    assert result["curve"][0]["seconds"] < result["curve"][1]["seconds"] == result["train_seconds"]
    assert result["precision"] == ("fp32" if system == "plain" else "bf16")
    assert result["images_per_second"] == pytest.approx(24 * 2 / result["train_seconds"], rel=0.01)
    assert result["peak_rss_mb"] > 100


def test_the_plain_loop_changes_the_weights_from_the_shared_start(overrides):
    start = speed_systems.prepare("fashion-mnist", overrides)
    before = {k: v.clone() for k, v in start.model.state_dict().items()}
    again = speed_systems.prepare("fashion-mnist", overrides)
    assert all(torch.equal(before[k], v) for k, v in again.model.state_dict().items())  # same seed, same start
    speed_systems.run_plain(start)
    assert not torch.equal(before["head.2.weight"], start.model.state_dict()["head.2.weight"])


def test_clock_leaves_the_evaluation_out():
    clock = speed_systems.EpochClock(test=lambda model: time.sleep(0.3) or 0.5)
    clock.start()
    clock.epoch_end(torch.nn.Identity())
    assert clock.elapsed() < 0.25
    assert clock.curve == [{"epoch": 1, "seconds": pytest.approx(0, abs=0.05), "accuracy": 0.5}]


def test_seconds_to_target_is_the_first_epoch_that_reaches_it():
    curve = [{"seconds": s, "accuracy": a} for s, a in ((10.0, 0.8), (20.0, 0.93), (30.0, 0.92))]
    assert speed_systems.seconds_to_target(curve, 0.92) == 20.0
    assert speed_systems.seconds_to_target(curve, 0.95) is None


def test_study_writes_ratios_flops_fraction_and_the_goals(monkeypatch, tmp_path, overrides):
    fake = {
        "convscope": (10.0, 2000.0, "bf16"),
        "bare": (9.8, 2100.0, "bf16"),
        "lightning": (20.0, 1000.0, "bf16"),
        "plain": (None, 400.0, "fp32"),
    }

    def run(system, recipe, overrides):
        to_target, rate, precision = fake[system]
        accuracy = 0.95 if to_target is not None else 0.9
        curve = [{"epoch": 1, "seconds": to_target or 50.0, "accuracy": accuracy}]
        return {"curve": curve, "final_accuracy": accuracy, "images_per_second": rate, "precision": precision,
                "peak_rss_mb": 1000.0, "train_seconds": 50.0}  # fmt: skip

    monkeypatch.setattr(bench_speed, "_run_in_process", run)
    monkeypatch.setattr(bench_speed, "matmul_peak_gflops", lambda dtype: 100.0 if dtype == torch.float32 else 400.0)
    out = tmp_path / "speed.json"
    result = bench_speed.run_speed_study(
        "speed-fashion", out=out, overrides=overrides, results_dir=tmp_path, machine={}
    )
    written = json.loads(out.read_text())
    assert written["target"] == 0.93 and written["convscope"]["seconds_to_target"] == 10.0
    assert written["plain"]["seconds_to_target"] is None and written["figures"]["convscope_vs_plain"] is None
    assert written["figures"]["convscope_vs_lightning"] == 0.5 and written["reached"]["vs_lightning"]
    assert written["figures"]["engine_overhead"] == pytest.approx(0.05) and written["reached"]["engine_overhead"]
    flops = result["train_flops_per_image"]
    assert flops > 0 and written["plain"]["flops_fraction"] == pytest.approx(flops * 400 / 100e9, rel=1e-3)
    assert written["convscope"]["flops_fraction"] == pytest.approx(flops * 2000 / 400e9, rel=1e-3)


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["speed-fashion", "--target", "1.5"], "--target 1.5"),
        (["demo-fashion", "--target", "0.5"], "benchmark 'demo-fashion' has no option 'target'"),
        (["transfer", "--repeat", "3"], "benchmark 'transfer' has no option 'repeat'; accepted: run_dir"),
        (["race-cifar10", "--repeat", "0"], "repeat"),
    ],
)
def test_a_bad_target_is_one_error_line(capsys, args, named):
    code, _, err = cli(capsys, "bench", *args)
    assert code == 2 and named in one_error_line(err)


def test_target_replaces_the_benchmarks_own(monkeypatch, tmp_path):
    def run(system, recipe, overrides):
        curve = [{"epoch": 1, "seconds": 5.0, "accuracy": 0.7}]
        return {"curve": curve, "final_accuracy": 0.7, "images_per_second": 10.0, "precision": "bf16",
                "peak_rss_mb": 1.0, "train_seconds": 5.0}  # fmt: skip

    monkeypatch.setattr(bench_speed, "_run_in_process", run)
    monkeypatch.setattr(bench_speed, "matmul_peak_gflops", lambda dtype: 100.0)
    monkeypatch.setattr(bench_speed, "forward_flops_per_image", lambda recipe, overrides: 1e6)
    result = bench_speed.run_speed_study("speed-cifar10", out=tmp_path / "s.json", overrides={}, results_dir=tmp_path,
                                         machine={}, systems=("convscope",), target=0.6)  # fmt: skip
    assert result["target"] == 0.6 and result["convscope"]["seconds_to_target"] == 5.0


def test_bad_data_is_one_error_line_before_any_system_starts(capsys):
    code, out, err = cli(capsys, "bench", "speed-fashion", "--set", "data.name=imagefolder:/nowhere")
    assert code == 2 and "/nowhere" in one_error_line(err) and "---" not in out


def test_a_system_process_error_becomes_one_error_naming_the_system(capfd):
    """A system runs in its own process: its `error:` line becomes the benchmark's, not a second one."""
    with pytest.raises(UserError, match=r"system 'plain': data path '/nowhere' does not exist"):
        bench_speed._run_in_process("plain", "fashion-mnist", {"data.name": "imagefolder:/nowhere"})
    assert "error:" not in capfd.readouterr().err


def test_the_recorded_command_reproduces_the_run():
    assert bench_command("speed-cifar10", {"train.epochs": "2"}, 0.6) == (
        "convscope bench speed-cifar10 --set train.epochs=2 --target 0.6"
    )
    assert bench_command("cifar10") == "convscope bench cifar10"
