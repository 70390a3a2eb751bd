"""airbench94 as a raced system (its network, schedule, optimiser, augmentation, Lookahead and test-time
augmentation as published) and the race study (turns, targets, medians, bad options)."""

import json
import math

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from convscope.bench import airbench, race
from convscope.bench.speed_systems import EpochClock
from convscope.data.base import ImageSet
from convscope.errors import UserError
from convscope.models.whitening import PatchWhitening, fit_to_data
from tests.data.helpers import make_imagefolder


def test_network_has_airbench94s_parameters_and_shapes():
    """Figures from the published ``make_net`` (airbench94.py, widths 64/256/256): 24 + 288 in the whitening conv
    (3 -> 2 x 3 x 2 x 2 channels, 2x2), conv weights 24x64x9, 64x64x9, 64x256x9, 3 x 256x256x9, two batch-norm
    vectors per conv (64, 64, 256 x 4), the 256 x 10 linear: 1,972,792 in all, of which the whitening filters (288)
    and the batch-norm scales (1,152) are frozen: 1,971,352 trained. A 32x32 image leaves 256 maps of 3x3."""
    model = airbench.airbench_net()
    whitening = next(m for m in model.modules() if isinstance(m, PatchWhitening))
    total = sum(p.numel() for p in model.parameters()) + whitening.weight.numel()
    assert total == 1_972_792
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 1_971_352
    x = torch.randn(2, 3, 32, 32)
    assert model.features(x).shape == (2, 256, 3, 3) and model(x).shape == (2, 10)
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(norms) == 6 and all(m.eps == 1e-12 and m.momentum == 0.4 for m in norms)
    first = model.features[2][0].weight  # block 1's first conv, 24 -> 64: its first 24 filters start as identity
    assert torch.equal(first[:24, :, 1, 1], torch.eye(24)) and first[:24].abs().sum() == 24


def test_training_flops_add_up_to_the_published_036_petaflops():
    """airbench94.py: 0.36 PFLOPs for a run: 476 steps of 1024 images trained, 6 test-time views of 10,000."""
    model = airbench.airbench_net().eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, 3, 32, 32))
    forward = counter.get_total_flops()
    train = race.training_flops_per_image(model, 3, (32, 32))
    assert 2.5 < train / forward < 3.5 and not model.training  # backward about twice the forward; model untouched
    steps = math.ceil(50_000 // 1024 * 9.9)
    assert steps == 476
    assert steps * 1024 * train + 6 * 10_000 * forward == pytest.approx(0.36e15, rel=0.02)


def test_schedule_and_optimiser_are_airbench94s():
    schedule = airbench.triangle(476, 0.2, 0.23, 0.07)
    assert len(schedule) == 477 and schedule[0] == 0.2 and schedule[109] == 1.0
    assert schedule[-1] == pytest.approx(0.07) and schedule[50] == pytest.approx(0.2 + 0.8 * 50 / 109)
    model = airbench.airbench_net()
    biases, others = airbench.airbench_optimizer(model, airbench.Hyper()).param_groups
    lr = 11.5 / (1024 * (1 + 1 / 0.15))  # the rate per 1024 examples, Nesterov's step scale taken out
    assert others["lr"] == pytest.approx(lr) and biases["lr"] == pytest.approx(64 * lr)
    # The decay taken off per step (rate x weight_decay) is the same for both groups: 0.0153 per 1024 examples.
    for group in (biases, others):
        assert group["lr"] * group["weight_decay"] == pytest.approx(0.0153 * 1024 / (1024 * (1 + 1 / 0.15)))
    assert others["nesterov"] and others["momentum"] == 0.85
    assert len(biases["params"]) == 6 and sum(p.numel() for p in others["params"]) == 1_971_352 - 64 * 2 - 256 * 4


def _loader(n: int, translate: int) -> airbench.AlternatingFlipLoader:
    images = torch.randint(0, 256, (n, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(n))
    data = ImageSet(images, torch.arange(n) % 2, ["a", "b"])
    return airbench.AlternatingFlipLoader(data, 16, seed=0, translate=translate, mean=[0.5] * 3, std=[0.25] * 3,
                                          device=torch.device("cpu"))  # fmt: skip


def test_alternating_flip_mirrors_each_image_every_other_epoch():
    loader = _loader(200, translate=0)
    index = torch.arange(200)
    even, odd, even_again = (loader._batch(index, epoch, 0)[0] for epoch in (0, 1, 2))
    assert torch.equal(odd, even.flip(-1)) and torch.equal(even_again, even)
    unflipped = (loader.data.images.float() / 255 - 0.5) / 0.25
    flipped_first = [not torch.equal(even[i], unflipped[i]) for i in range(200)]
    assert 60 < sum(flipped_first) < 140  # a random half
    assert len(loader) == 12  # whole batches only


def test_translation_shifts_each_image_by_at_most_two_pixels():
    loader = _loader(64, translate=2)
    index = torch.arange(64)
    plain = _loader(64, translate=0)._batch(index, 0, 0)[0]
    shifted = loader._batch(index, 0, 0)[0]
    assert not torch.equal(shifted, plain)
    centre = plain[:, :, 2:6, 2:6]  # any shift of at most 2 keeps the centre 4x4 inside a shifted image
    assert all(
        any(
            torch.equal(shifted[i, :, 2 + dy : 6 + dy, 2 + dx : 6 + dx], centre[i])
            for dy in range(-2, 3)
            for dx in range(-2, 3)
        )
        for i in range(64)
    )


def test_lookahead_moves_to_the_average_and_sets_the_network_to_it():
    model = nn.BatchNorm1d(3)
    lookahead = airbench.Lookahead(model)
    with torch.no_grad():
        model.bias.fill_(1.0)
        model.running_mean.fill_(2.0)
    lookahead.update(model, decay=0.75)
    assert torch.allclose(model.bias, torch.full((3,), 0.25))
    assert torch.allclose(model.running_mean, torch.full((3,), 0.5))
    with torch.no_grad():
        model.bias.fill_(9.0)
    lookahead.update(model, decay=1.0)  # only copies the average back
    assert torch.allclose(model.bias, torch.full((3,), 0.25)) and model.num_batches_tracked == 0


def test_test_time_augmentation_weighs_airbench94s_six_views():
    views = []

    def model(x):
        views.append(x)
        return torch.nn.functional.one_hot(torch.full((len(x),), len(views) - 1), 6).float()

    x = torch.randn(2, 3, 8, 8)
    tta, plain = airbench.tta_logits(model, x)
    assert torch.equal(plain, torch.tensor([[1.0, 0, 0, 0, 0, 0]] * 2))
    assert torch.allclose(tta[0], torch.tensor([0.25, 0.25, 0.125, 0.125, 0.125, 0.125]))
    assert torch.equal(views[1], x.flip(-1))
    assert torch.equal(views[2][..., 1:, 1:], x[..., :-1, :-1])  # content moved one pixel down and right
    assert torch.equal(views[4][..., :-1, :-1], x[..., 1:, 1:]) and torch.equal(views[5], views[4].flip(-1))


def test_whitening_bias_trains_its_epochs_then_stays(tmp_path):
    data = ImageSet(torch.randint(0, 256, (32, 3, 12, 12), dtype=torch.uint8), torch.arange(32) % 2, ["a", "b"])
    loader = airbench.AlternatingFlipLoader(data, 8, seed=0, translate=2, mean=[0.5] * 3, std=[0.25] * 3,
                                            device=torch.device("cpu"))  # fmt: skip
    model = airbench.airbench_net(2, 3, (12, 12))
    fit_to_data(model, (data.images.float() / 255 - 0.5) / 0.25)
    biases = []
    clock = EpochClock(test=lambda m: biases.append(m.features[0].bias.detach().clone()) or 0.5)
    hyper = airbench.Hyper(epochs=2.5, batch_size=8, whiten_bias_epochs=1, lookahead_start_epoch=1)
    assert airbench.train_airbench(model, loader, hyper, clock) == 10  # ceil(4 batches x 2.5)
    assert len(clock.curve) == 3 and not torch.equal(biases[0], torch.zeros(24))
    assert torch.equal(biases[1], biases[0]) and torch.equal(biases[2], biases[0])


def test_airbench_trains_on_the_races_data_and_reports_like_the_other_systems(tmp_path):
    folder = make_imagefolder(tmp_path / "pets", ("cat", "dog"), per_class=12, size=(16, 16), splits=("train", "test"))
    overrides = {"data.name": f"imagefolder:{folder}", "airbench.batch_size": "8", "airbench.epochs": "1.5"}
    result = airbench.run_airbench("cifar10", overrides)
    assert result["steps"] == 5 and [row["epoch"] for row in result["curve"]] == [1, 2]
    assert result["images_per_second"] == pytest.approx(5 * 8 / result["train_seconds"], rel=0.02)
    assert result["final_accuracy"] == result["curve"][-1]["accuracy"]
    assert 0 <= result["final_accuracy_without_tta"] <= 1 and result["hyper"]["lr"] == 11.5


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"airbench.nope": "1"}, "airbench.nope"),
        ({"airbench.epochs": "many"}, "many"),
        ({"airbench.batch_size": "0"}, "airbench.batch_size"),
    ],
)
def test_bad_airbench_settings_are_one_user_error(overrides, named):
    with pytest.raises(UserError, match=named):
        airbench.parse_hyper(overrides)


def test_airbench_settings_reach_only_airbench():
    overrides = {"airbench.epochs": "2", "train.epochs": "1"}
    assert race.system_overrides("convscope", overrides) == {"train.epochs": "1"}
    assert race.system_overrides("airbench", overrides) == overrides
    hyper, rest = airbench.parse_hyper(overrides)
    assert hyper.epochs == 2.0 and hyper.batch_size == 1024 and rest == {"train.epochs": "1"}


def _fake_race(monkeypatch, finals: dict[str, list[float]]) -> list[str]:
    """Each system's runs reach 0.5 after 10 s and its given final accuracy after 20 s (airbench) or 12 s."""
    order: list[str] = []

    def run(system, recipe, overrides):
        order.append(system)
        final = finals[system][(order.count(system) - 1) % len(finals[system])]
        end = 20.0 if system == "airbench" else 12.0
        curve = [{"epoch": 1, "seconds": 10.0, "accuracy": 0.5}, {"epoch": 2, "seconds": end, "accuracy": final}]
        return {"curve": curve, "final_accuracy": final, "images_per_second": 100.0, "precision": "bf16",
                "peak_rss_mb": 1.0, "train_seconds": end}  # fmt: skip

    monkeypatch.setattr(race, "_run_in_process", run)
    monkeypatch.setattr(race, "networks_flops", lambda r, systems, o: dict.fromkeys(systems, 2e6))
    monkeypatch.setattr(race, "matmul_peak_gflops", lambda dtype: 100.0)
    return order


def test_race_alternates_and_targets_airbenchs_final_accuracy_per_repetition(monkeypatch, tmp_path):
    order = _fake_race(monkeypatch, {"airbench": [0.90, 0.91, 0.92], "convscope": [0.91, 0.90, 0.93]})
    out = tmp_path / "race.json"
    result = race.run_race_study("race-cifar10", out=out, overrides={}, results_dir=tmp_path, machine={}, repeat=3)
    assert order == ["airbench", "convscope"] * 3
    written = json.loads(out.read_text())
    convscope = written["runs"]["convscope"]
    assert [row["target"] for row in convscope] == [0.90, 0.91, 0.92]
    assert [row["seconds_to_target"] for row in convscope] == [12.0, None, 12.0]  # 0.90 < 0.91 in repetition 2
    assert written["medians"]["convscope"]["seconds_to_target"] == 12.0
    assert written["medians"]["airbench"] == {"seconds_to_target": 20.0, "final_accuracy": 0.91,
                                              "images_per_second": 100.0, "flops_fraction": 0.002}  # fmt: skip
    assert written["figures"]["convscope_vs_airbench"] == 0.6 and written["reached"] == {"ratio": True}
    assert written["figures"]["convscope_vs_airbench_per_repetition"] == [0.6, None, 0.6]
    assert result["target"] is None and written["repeat"] == 3


def test_a_given_target_holds_for_every_repetition_and_a_median_of_misses_is_none(monkeypatch, tmp_path):
    _fake_race(monkeypatch, {"airbench": [0.9, 0.9], "convscope": [0.8, 0.95]})
    result = race.run_race_study("race-cifar10", out=tmp_path / "r.json", overrides={}, results_dir=tmp_path,
                                 machine={}, target=0.85)  # fmt: skip
    assert result["medians"]["convscope"]["seconds_to_target"] is None  # median of (never, 12 s)
    assert result["figures"]["convscope_vs_airbench"] is None and result["reached"] == {"ratio": False}


def test_fashion_race_checks_the_time_budget_at_its_accuracy(monkeypatch, tmp_path):
    _fake_race(monkeypatch, {"convscope": [0.94, 0.94], "bare": [0.94, 0.94], "plain": [0.94, 0.94]})
    result = race.run_race_study("race-fashion", out=tmp_path / "f.json", overrides={}, results_dir=tmp_path,
                                 machine={})  # fmt: skip
    assert result["target"] == 0.93 and result["reached"] == {"ratio": False, "within_seconds": True}
    lower = race.run_race_study("race-fashion", out=tmp_path / "f.json", overrides={}, results_dir=tmp_path,
                                machine={}, target=0.5)  # fmt: skip
    assert lower["reached"]["within_seconds"] is False  # 30 s at 50% is not the goal


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"repeat": 0}, "--repeat 0"),
        ({"target": 1.5}, "--target 1.5"),
        ({"systems": ("airbench", "tf")}, "'tf'"),
        ({"systems": ("convscope",)}, "give --target"),
    ],
)
def test_bad_race_options_are_one_user_error_before_anything_runs(monkeypatch, tmp_path, options, named):
    order = _fake_race(monkeypatch, {})
    with pytest.raises(UserError, match=named) as raised:
        race.run_race_study("race-cifar10", out=None, overrides={}, results_dir=tmp_path, machine={}, **options)
    assert "\n" not in str(raised.value) and order == []


def test_a_run_process_error_becomes_one_error_naming_the_system(capfd):
    with pytest.raises(UserError, match=r"system 'airbench': .*'/nowhere'"):
        race._run_in_process("airbench", "cifar10", {"data.name": "imagefolder:/nowhere"})
    assert "error:" not in capfd.readouterr().err
