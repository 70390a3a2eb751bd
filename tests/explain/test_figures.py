from pathlib import Path

import torch
from PIL import Image

from convscope.explain.figures import (
    Display,
    comparison_figure,
    denormalize,
    explanation_figure,
    feature_maps_figure,
    figure_png,
    save_figure,
    standardize_and_clip,
)
from convscope.explain.methods import FeatureMaps
from tests.explain.helpers import images, tiny_convnet


def test_standardize_and_clip_is_the_seeds_formula():
    x = torch.randn(5, 5, generator=torch.Generator().manual_seed(0)) * 3 + 1
    got = standardize_and_clip(x, min_val=0.2, max_val=0.9, saturation=0.3, brightness=0.4)
    expected = ((x - x.mean()) / x.std() * 0.3 + 0.4).clamp(0.2, 0.9)
    torch.testing.assert_close(got, expected)
    # A constant map does not divide by zero.
    assert standardize_and_clip(torch.ones(3, 3)).eq(0.5).all()


def test_denormalize_undoes_the_runs_normalisation():
    pixels = torch.rand(2, 3, 4, 4)
    mean, std = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]
    normalised = (pixels - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    torch.testing.assert_close(denormalize(normalised, mean, std), pixels)


def test_explanation_figure_has_image_map_and_overlay_per_input(tmp_path: Path):
    fig = explanation_figure(torch.rand(2, 3, 8, 8), torch.rand(2, 8, 8), ["cat p=0.9", "dog p=0.8"], "gradcam",
                             Display(saturation=0.2, brightness=0.6, alpha=0.5))  # fmt: skip
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["cat p=0.9", "gradcam", "overlay", "dog p=0.8", "gradcam", "overlay"]
    assert fig.axes[2].images[1].get_alpha() == 0.5  # the map over the image
    path = save_figure(fig, tmp_path / "sub" / "out.png")
    assert Image.open(path).size[0] > 500


def test_comparison_figure_puts_every_method_over_each_image():
    maps = {"saliency": torch.rand(2, 8, 8), "gradcam": torch.rand(2, 8, 8)}
    fig = comparison_figure(torch.rand(2, 1, 8, 8), maps, ["a", "b"])
    assert [ax.get_title() for ax in fig.axes][:3] == ["a", "saliency", "gradcam"]
    assert figure_png(fig).startswith(b"\x89PNG")


def test_feature_maps_figure_shows_each_stage_and_the_probabilities():
    model = tiny_convnet()
    x = images(2)
    stages = [FeatureMaps(model).stages(x[i : i + 1]) for i in range(2)]
    probs = model(x).softmax(dim=1).detach()
    fig = feature_maps_figure(torch.rand(2, 1, 8, 8), stages, probs, ["a", "b", "c"])
    titles = [ax.get_title() for ax in fig.axes]
    assert titles.count("input") == 2 and titles.count("probability") == 2
    assert "Conv2d\nfeatures.3" in titles and "Linear\nhead.2" in titles
    assert figure_png(fig).startswith(b"\x89PNG")
