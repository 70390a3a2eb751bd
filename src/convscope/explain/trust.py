"""How far an explanation can be trusted: three measures per method.

- Pointing game (Zhang et al. 2016): the share of images whose map maximum falls inside the object's mask.
  Higher is better.
- Deletion AUC (Petsiuk et al. 2018): remove pixels most-salient first (replaced by black) and follow the
  probability of the class; the area under that curve. Lower is better: a faithful map finds what the
  model needs first.
- Model randomisation (Adebayo et al. 2018): Spearman rank correlation between the map of the trained model
  and of the same network with re-initialised weights. Low is good: a map that survives randomising the
  weights does not explain the weights. A method above ``SANITY_THRESHOLD`` fails the check.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING

import torch
from torch import nn
from torchmetrics.functional import spearman_corrcoef

from convscope.errors import UserError
from convscope.explain.figures import denormalize
from convscope.explain.methods import AttributionMethod, FeatureMaps, black_baseline, create_method, method_names

if TYPE_CHECKING:
    from convscope.api import LoadedRun

SANITY_THRESHOLD = 0.5  # Spearman above this between trained and randomised maps: the method fails the check
MASK_THRESHOLD = 0.1  # a pixel belongs to the object when its intensity (0..1, brightest channel) is above this
DELETION_STEPS = 28

Probabilities = Callable[[torch.Tensor], torch.Tensor]  # model-ready images -> N x classes probabilities


def object_masks(images: torch.Tensor, threshold: float = MASK_THRESHOLD) -> torch.Tensor:
    """N x H x W masks of the pixels brighter than ``threshold`` (``images`` N x C x H x W in [0, 1]): the item
    of a Fashion-MNIST image, which lies on a black background."""
    return images.amax(dim=1) > threshold


def pointing_game(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Per image, whether the map's maximum (the first in raster order on ties) lies in the mask. A constant
    map points nowhere and counts as a miss."""
    flat = maps.flatten(1)
    hits = masks.flatten(1).gather(1, flat.argmax(dim=1, keepdim=True))[:, 0]
    return hits & (flat.amax(dim=1) > flat.amin(dim=1))


@torch.no_grad()
def deletion_curves(
    probabilities: Probabilities,
    x: torch.Tensor,
    target: torch.Tensor,
    maps: torch.Tensor,
    baseline: torch.Tensor,
    steps: int = DELETION_STEPS,
    batch: int = 512,
) -> torch.Tensor:
    """N x (steps + 1): the target's probability as the pixels are replaced by ``baseline`` (1 x C x 1 x 1),
    the most salient first, in ``steps`` equal chunks (ties removed in raster order). All the partly deleted
    images go through the model in batches of ``batch``."""
    n, pixels = len(x), maps[0].numel()
    order = maps.flatten(1).argsort(dim=1, descending=True, stable=True)
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(pixels, device=order.device).expand(n, -1))
    removed_per_step = torch.tensor([round(step * pixels / steps) for step in range(steps + 1)], device=x.device)
    fill = baseline.to(x.device, x.dtype)
    curves = torch.empty((steps + 1) * n)
    for start in range(0, len(curves), batch):
        index = torch.arange(start, min(start + batch, len(curves)), device=x.device)
        step, image = index // n, index % n
        keep = rank[image] >= removed_per_step[step, None]
        deleted = torch.where(keep.view(-1, 1, *x.shape[-2:]), x[image], fill)
        curves[start : start + len(index)] = (
            probabilities(deleted)[torch.arange(len(index)), target[image]].float().cpu()
        )
    return curves.view(steps + 1, n).T.contiguous()


def deletion_auc(curves: torch.Tensor) -> torch.Tensor:
    """Per image, the area under a deletion curve over the fraction removed (0..1), by the trapezoid rule."""
    return torch.trapezoid(curves, dx=1.0 / (curves.shape[1] - 1), dim=1)


def randomized_copy(model: nn.Module, seed: int = 0) -> nn.Module:
    """The same network with every layer re-initialised (its own ``reset_parameters``, batch-norm statistics
    included), drawn from ``seed`` without touching the global random state."""
    copied = copy.deepcopy(model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for module in copied.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
            if hasattr(module, "reset_running_stats"):
                module.reset_running_stats()
    return copied.eval()


def rank_correlation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per image, Spearman's rank correlation of two N x H x W maps (ties share their mean rank); NaN where
    either map is constant, since a constant map ranks nothing."""
    out = torch.full((len(a),), math.nan)
    for i in range(len(a)):
        fa, fb = a[i].flatten().double().cpu(), b[i].flatten().double().cpu()
        if fa.max() > fa.min() and fb.max() > fb.min():
            out[i] = spearman_corrcoef(fa, fb).float()
    return out


def attribute_in_batches(method: AttributionMethod, x: torch.Tensor, target: torch.Tensor, batch: int) -> torch.Tensor:
    return torch.cat([method.attribute(x[i : i + batch], target[i : i + batch]) for i in range(0, len(x), batch)])


def trust_figures(
    model: nn.Module,
    methods: Sequence[str],
    x: torch.Tensor,
    probabilities: Probabilities,
    masks: torch.Tensor,
    baseline: torch.Tensor,
    *,
    batch: int = 64,
    seed: int = 0,
) -> dict[str, dict]:
    """The three measures for each method in ``methods`` on the images ``x`` (model-ready), explaining the
    model's predicted class, plus ``random`` (uniform noise maps) as the chance level. A method that does not
    apply to the model is reported with its reason instead of figures."""
    target = torch.cat([probabilities(x[i : i + batch]).argmax(dim=1) for i in range(0, len(x), batch)])
    randomized = randomized_copy(model, seed)
    results: dict[str, dict] = {}
    for name in methods:
        started = time.perf_counter()
        method = create_method(name, model, baseline=baseline)
        if isinstance(method, FeatureMaps):
            continue
        try:
            maps = attribute_in_batches(method, x, target, batch)
        except UserError as exc:  # a method that does not apply (attention on a classifier) says why
            results[name] = {"applies": False, "reason": str(exc)}
            continue
        random_maps = attribute_in_batches(create_method(name, randomized, baseline=baseline), x, target, batch)
        results[name] = _figures(probabilities, x, target, maps, masks, baseline, random_maps)
        results[name]["seconds"] = round(time.perf_counter() - started, 2)
        results[name]["notes"] = method.notes
    generator = torch.Generator().manual_seed(seed)
    noise = torch.rand(x.shape[0], *x.shape[-2:], generator=generator).to(x.device)
    results["random"] = _figures(probabilities, x, target, noise, masks, baseline, None)
    results["random"]["notes"] = ["uniform noise maps: the chance level of each measure"]
    return results


def _figures(
    probabilities: Probabilities,
    x: torch.Tensor,
    target: torch.Tensor,
    maps: torch.Tensor,
    masks: torch.Tensor,
    baseline: torch.Tensor,
    random_maps: torch.Tensor | None,
) -> dict:
    curves = deletion_curves(probabilities, x, target, maps, baseline)
    figures: dict = {
        "applies": True,
        "pointing_game": pointing_game(maps, masks.to(maps.device)).float().mean().item(),
        "deletion_auc": deletion_auc(curves).mean().item(),
        "deletion_curve": [round(v, 4) for v in curves.mean(dim=0).tolist()],
        "randomization_spearman": None,
        "sanity_check": None,
        "images": len(x),
    }
    if random_maps is not None:
        rho = rank_correlation(maps, random_maps)
        defined = rho[~rho.isnan()]
        figures["randomization_undefined"] = int(rho.isnan().sum())  # images with a constant map
        if len(defined):
            spearman = defined.mean().item()
            figures["randomization_spearman"] = spearman
            figures["sanity_check"] = "pass" if spearman <= SANITY_THRESHOLD else "fail"
    return figures


def first_test_images(run: LoadedRun, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``count`` images of a run's test split (model-ready) and their labels."""
    loader = run.modality.prepare(run.recipe).loaders(run.recipe, run.device)["test"]
    xs, ys, seen = [], [], 0
    for x, y in loader:
        xs.append(x[: count - seen].float().contiguous())
        ys.append(y[: count - seen])
        seen += len(xs[-1])
        if seen >= count:
            break
    return torch.cat(xs), torch.cat(ys)


def trust_of_run(run: LoadedRun, count: int = 200, *, batch: int = 64) -> dict:
    """:func:`trust_figures` of every attribution method on the first ``count`` test images of an image run,
    with the protocol that produced them."""
    x, _ = first_test_images(run, count)
    masks = object_masks(denormalize(x, run.info["mean"], run.info["std"]))
    baseline = black_baseline(run.info["mean"], run.info["std"])
    methods = [name for name in method_names() if name != "feature-maps"]
    figures = trust_figures(run.model, methods, x, partial(run.task.predict, run.model), masks, baseline, batch=batch)
    return {
        "protocol": {
            "images": f"the first {len(x)} images of the run's test split",
            "target": "the model's predicted class",
            "mask": (
                f"the item's own pixels: brightest channel above {MASK_THRESHOLD} of full intensity (objects on a "
                "black background, as in Fashion-MNIST; FashionScenes with true object masks does not exist yet)"
            ),
            "mask_share": masks.float().mean().item(),
            "deletion": f"{DELETION_STEPS} steps, removed pixels set to black, probability of the target",
            "randomization": (
                "every layer re-initialised (reset_parameters, seed 0); Spearman rank correlation per image between "
                "the trained and the randomised model's maps, averaged over images whose maps are not constant"
            ),
            "sanity_threshold": SANITY_THRESHOLD,
            "sanity_rule": f"a method fails when its randomisation Spearman is above {SANITY_THRESHOLD}",
        },
        "methods": figures,
    }
