"""Fitting a recipe to the data it meets: small folders, other data than the recipe's own."""

from __future__ import annotations

import pytest

from convscope import adapt
from convscope.config import load_recipe


def notes() -> tuple[list[str], adapt.Note]:
    said: list[str] = []
    return said, said.append


@pytest.mark.parametrize("train_images", [40, 123, 300, 399, 2000])
def test_a_default_batch_shrinks_until_an_epoch_has_enough_steps(train_images):
    recipe = load_recipe("classify")  # batch 128, SGD 0.1
    said, note = notes()
    adapted = adapt.after_data(recipe, train_images, 1, note)
    batch = adapted.train.batch_size
    wanted = max(adapt.MIN_BATCH, train_images // adapt.MIN_STEPS)  # MIN_STEPS steps, or batches of MIN_BATCH
    assert wanted <= batch <= wanted + 3  # a few more keep the last batch from being a lone image
    assert adapted.optim == recipe.optim  # the rate is kept
    assert len(said) == 1 and f"batch {batch}" in said[0] and "steps per epoch" in said[0]


def test_a_batch_that_already_gives_enough_steps_is_kept():
    recipe = load_recipe("classify")
    said, note = notes()
    assert adapt.after_data(recipe, 128 * adapt.MIN_STEPS, 1, note) == recipe and not said


def test_an_explicit_batch_is_kept_with_a_note_when_it_gives_few_steps():
    recipe = load_recipe("classify", {"train.batch_size": "64"})
    said, note = notes()
    assert adapt.after_data(recipe, 150, 1, note).train.batch_size == 64
    assert len(said) == 1 and "leaves 3 steps per epoch" in said[0]
    said.clear()
    adapt.after_data(recipe, 64 * adapt.FEW_STEPS, 1, note)
    assert not said


def test_a_folder_smaller_than_the_smallest_batch_keeps_the_recipes_batch_when_it_is_smaller():
    recipe = load_recipe("classify", {"train.batch_size": "4"})
    recipe.explicit.clear()  # as if the recipe file had said it
    assert adapt.after_data(recipe, 30, 1, notes()[1]) == recipe


def test_muon_scales_only_its_sgd_parts():
    muon = load_recipe("cifar10")
    adapted = adapt.after_data(muon, 1000, 1, notes()[1])
    ratio = adapted.train.batch_size / 2000
    assert adapted.optim.lr == muon.optim.lr
    assert adapted.optim.linear_lr == pytest.approx(muon.optim.linear_lr * ratio)
    assert adapted.optim.bias_lr == pytest.approx(muon.optim.bias_lr * ratio)


def test_each_process_counts_its_share():
    recipe = load_recipe("classify")
    one = adapt.after_data(recipe, 400, 1, notes()[1]).train.batch_size
    two = adapt.after_data(recipe, 400, 2, notes()[1]).train.batch_size
    assert (one, two) == (20, 10)  # 20 steps for each process


def test_a_recipe_on_its_own_data_is_left_alone():
    recipe = load_recipe("cifar10", {"transfer.init": "runs/x"})
    said, note = notes()
    assert adapt.before_data(recipe, note) is recipe and not said


def test_settings_of_another_data_set_are_reset_and_named():
    recipe = load_recipe("cifar10", {"data.name": "imagefolder:photos", "transfer.init": "runs/c10"})
    said, note = notes()
    adapted = adapt.before_data(recipe, note)
    assert adapted.data.valid_fraction > 0 and adapted.optim == recipe.optim
    assert len(said) == 1 and "data.valid_fraction" in said[0] and "'cifar10'" in said[0]


def test_class_lists_of_another_data_set_are_reset():
    recipe = load_recipe("cifar5-fewshot", {"data.name": "imagefolder:photos"})
    adapted = adapt.before_data(recipe, notes()[1])
    assert adapted.data.classes == [] and adapted.data.per_class == 0


def test_what_the_command_line_set_is_never_reset():
    recipe = load_recipe(
        "cifar10",
        {"data.name": "imagefolder:photos", "transfer.init": "r", "data.valid_fraction": "0"},
    )
    said, note = notes()
    assert adapt.before_data(recipe, note) == recipe and not said


def test_adapting_twice_changes_nothing_more():
    recipe = load_recipe("cifar10", {"data.name": "imagefolder:photos", "transfer.init": "r"})
    once = adapt.after_data(adapt.before_data(recipe, notes()[1]), 123, 1, notes()[1])
    twice = adapt.after_data(adapt.before_data(once, notes()[1]), 123, 1, notes()[1])
    assert twice == once


def test_the_last_batch_is_never_a_lone_image():
    adapted = adapt.after_data(load_recipe("classify"), 190, 1, notes()[1])
    batch = adapted.train.batch_size
    assert 190 % batch == 0 or 190 % batch >= batch / 2, batch
