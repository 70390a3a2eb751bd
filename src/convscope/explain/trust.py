"""How far an explanation can be trusted: four measures per method, and a verdict against random maps.

- Pointing game (Zhang et al. 2016): the share of images whose map maximum falls inside the object's mask.
  Higher is better. Only where true object masks exist (see :func:`object_masks_of`): a mask guessed from the
  pixels (say, "not black") covers most of a photograph, and every map, random ones included, then scores 1.
- Deletion AUC (Petsiuk et al. 2018): remove pixels most-salient first (replaced by black) and follow the
  probability of the class; the area under that curve. Lower is better: a faithful map finds what the
  model needs first.
- Insertion AUC (Petsiuk et al. 2018): start from a blurred copy of the image and put the pixels back,
  most salient first; the area under the probability curve. Higher is better.
- Model randomisation (Adebayo et al. 2018): Spearman rank correlation between the map of the trained model
  and of the same network with re-initialised weights. Low is good: a map that survives randomising the
  weights does not explain the weights. A method above ``SANITY_THRESHOLD`` fails the check.

Verdict (:func:`verdict`): a method passes only if it beats the random maps of the same run on deletion or
insertion AUC and passes the randomisation check. "Beats" is a paired comparison over the images: the mean
per-image difference of the AUCs (method minus random) lies beyond ``BEAT_STANDARD_ERRORS`` standard errors of
that mean, in the better direction. Without a margin, noise maps that happen to score a little worse on a few
images would hand a PASS to a method that is no better than chance.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.functional import spearman_corrcoef

from convscope.console import Stage
from convscope.errors import UserError
from convscope.explain.figures import denormalize
from convscope.explain.methods import AttributionMethod, FeatureMaps, black_baseline, create_method, method_names

if TYPE_CHECKING:
    from convscope.run import LoadedRun

SANITY_THRESHOLD = 0.5  # Spearman above this between trained and randomised maps: the method fails the check
MASK_THRESHOLD = 0.1  # a pixel belongs to the object when its intensity (0..1, brightest channel) is above this
CURVE_STEPS = 28
BEAT_STANDARD_ERRORS = 2.0  # margin of the paired comparison with random maps (one-sided ~97.7% if normal)
# And the least mean AUC difference that counts: on a model at chance every map's curve is flat, and a difference of
# 2e-5 can lie beyond 2 standard errors of nearly identical images.
MIN_AUC_DIFFERENCE = 0.01
BLUR_SIGMA = 1 / 12  # insertion's start: a Gaussian blur of this share of the image's side (RISE's, on 224 px)
# Data sets whose images are items on a black background: the bright pixels are the item, by the same rule
# FashionScenes' true masks follow (data/scenes.py). Any other image (a photograph) has no mask to read off.
ITEMS_ON_BLACK = ("fashion-mnist", "mnist")
NEEDS_MASKS = (
    "not computed: needs object masks, which this data set does not have (a mask guessed from the pixels covers "
    "most of a photograph, so every map, random ones included, would score 1). Data with true masks: "
    "fashion-scenes (trust_of_run on a weakseg run), or items on black (fashion-mnist, mnist)"
)

VERDICT_RULE = (
    "PASS only if the method beats the random maps of the same images on deletion AUC (lower) or insertion AUC "
    f"(higher), the mean per-image difference lying beyond {BEAT_STANDARD_ERRORS:g} standard errors of that mean "
    f"and {MIN_AUC_DIFFERENCE:g} AUC, "
    "the random maps do not do better on the other AUC (not even by a point estimate), "
    f"and its randomisation Spearman is at most {SANITY_THRESHOLD} (Adebayo et al. 2018); FAIL otherwise"
)

Probabilities = Callable[[torch.Tensor], torch.Tensor]  # model-ready images -> N x classes probabilities


def object_masks(images: torch.Tensor, threshold: float = MASK_THRESHOLD) -> torch.Tensor:
    """N x H x W masks of the pixels brighter than ``threshold`` (``images`` N x C x H x W in [0, 1]): the item
    of a Fashion-MNIST image, which lies on a black background."""
    return images.amax(dim=1) > threshold


def object_masks_of(
    dataset: str, x: torch.Tensor, mean: list[float], std: list[float], scene_masks: torch.Tensor | None
) -> tuple[torch.Tensor | None, str]:
    """The true object masks of test images ``x`` (model-ready) of ``dataset``, and how they were made; None and
    why not where the data has none. ``scene_masks``: the masks a scene data set's test batches carry (class
    c + 1 per pixel, 0 the background), which :func:`trust_figures` narrows to the explained class."""
    if scene_masks is not None:
        return scene_masks, (
            "the data set's true masks (FashionScenes): the pixels of the explained class's items; an image whose "
            "explained class is absent counts as a miss"
        )
    if dataset.partition(":")[0] in ITEMS_ON_BLACK:
        return object_masks(denormalize(x, mean, std)), (
            f"the item's own pixels: brightest channel above {MASK_THRESHOLD} of full intensity ({dataset} items "
            "lie on a black background; FashionScenes' true masks follow the same rule)"
        )
    return None, NEEDS_MASKS


def pointing_game(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Per image, whether the map's maximum (the first in raster order on ties) lies in the mask. A constant
    map points nowhere and counts as a miss."""
    flat = maps.flatten(1)
    hits = masks.flatten(1).gather(1, flat.argmax(dim=1, keepdim=True))[:, 0]
    return hits & (flat.amax(dim=1) > flat.amin(dim=1))


def blurred(x: torch.Tensor, share: float = BLUR_SIGMA) -> torch.Tensor:
    """``x`` (N x C x H x W) under a Gaussian blur of standard deviation ``share`` of its shorter side, edges
    replicated: insertion's starting image, which keeps the colours but not the shapes."""
    sigma = max(share * min(x.shape[-2:]), 0.5)
    radius = min(math.ceil(3 * sigma), min(x.shape[-2:]) - 1)
    offsets = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    kernel = torch.exp(-(offsets**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    channels = x.shape[1]
    out = F.pad(x, (radius, radius, radius, radius), mode="replicate")
    out = F.conv2d(out, kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
    return F.conv2d(out, kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)


@torch.no_grad()
def reveal_curves(
    probabilities: Probabilities,
    start: torch.Tensor,
    end: torch.Tensor,
    target: torch.Tensor,
    maps: torch.Tensor,
    steps: int = CURVE_STEPS,
    batch: int = 512,
) -> torch.Tensor:
    """N x (steps + 1): the target's probability as the pixels of ``start`` are replaced by those of ``end``
    (both N x C x H x W, or broadcastable), the most salient first, in ``steps`` equal chunks (ties in raster
    order). All the part-replaced images go through the model in batches of ``batch``."""
    n, pixels = len(maps), maps[0].numel()
    order = maps.flatten(1).argsort(dim=1, descending=True, stable=True)
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(pixels, device=order.device).expand(n, -1))
    replaced_per_step = torch.tensor([round(step * pixels / steps) for step in range(steps + 1)], device=maps.device)
    shape = (n, *torch.broadcast_shapes(start.shape[1:], end.shape[1:]))
    start, end = start.expand(shape), end.to(start.device, start.dtype).expand(shape)
    curves = torch.empty((steps + 1) * n)
    for first in range(0, len(curves), batch):
        index = torch.arange(first, min(first + batch, len(curves)), device=maps.device)
        step, image = index // n, index % n
        replaced = rank[image] < replaced_per_step[step, None]
        mixed = torch.where(replaced.view(-1, 1, *shape[-2:]), end[image], start[image])
        curves[first : first + len(index)] = probabilities(mixed)[torch.arange(len(index)), target[image]].float().cpu()
    return curves.view(steps + 1, n).T.contiguous()


def deletion_curves(
    probabilities: Probabilities,
    x: torch.Tensor,
    target: torch.Tensor,
    maps: torch.Tensor,
    baseline: torch.Tensor,
    steps: int = CURVE_STEPS,
    batch: int = 512,
) -> torch.Tensor:
    """N x (steps + 1): the target's probability as the pixels of ``x`` are replaced by ``baseline``
    (1 x C x 1 x 1), the most salient first."""
    return reveal_curves(probabilities, x, baseline, target, maps, steps, batch)


def insertion_curves(
    probabilities: Probabilities,
    x: torch.Tensor,
    target: torch.Tensor,
    maps: torch.Tensor,
    start: torch.Tensor,
    steps: int = CURVE_STEPS,
    batch: int = 512,
) -> torch.Tensor:
    """N x (steps + 1): the target's probability as the pixels of ``x`` are put into ``start`` (its blurred copy,
    :func:`blurred`), the most salient first."""
    return reveal_curves(probabilities, start, x, target, maps, steps, batch)


def curve_auc(curves: torch.Tensor) -> torch.Tensor:
    """Per image, the area under a deletion or insertion curve over the share of pixels changed (0..1), by the
    trapezoid rule."""
    return torch.trapezoid(curves, dx=1.0 / (curves.shape[1] - 1), dim=1)


def paired_comparison(auc: torch.Tensor, random_auc: torch.Tensor, *, higher_is_better: bool) -> dict:
    """Whether per-image AUCs beat the random maps' on the same images: the mean of the differences (method minus
    random) beyond ``BEAT_STANDARD_ERRORS`` standard errors in the better direction. One image decides nothing."""
    difference = (auc - random_auc).double()
    mean = difference.mean().item()
    error = (difference.std() / math.sqrt(len(difference))).item() if len(difference) > 1 else math.nan
    better = mean if higher_is_better else -mean
    return {
        "mean_difference": mean,
        "standard_error": error,
        "beats_random": bool(len(difference) > 1 and better > max(BEAT_STANDARD_ERRORS * error, MIN_AUC_DIFFERENCE)),
        "beaten_by_random": bool(
            len(difference) > 1 and -better > max(BEAT_STANDARD_ERRORS * error, MIN_AUC_DIFFERENCE)
        ),
    }


def verdict(figures: dict) -> tuple[str, str]:
    """("pass" or "fail", why) for a method's figures (see the module's rule)."""
    deletion, insertion = figures["deletion_vs_random"], figures["insertion_vs_random"]
    differences = (
        f"(method minus random, per image: deletion {deletion['mean_difference']:+.3f} ± "
        f"{deletion['standard_error']:.3f}, insertion {insertion['mean_difference']:+.3f} ± "
        f"{insertion['standard_error']:.3f} SE)"
    )
    reasons = []
    if not (deletion["beats_random"] or insertion["beats_random"]):
        beaten = [name for name, row in (("deletion", deletion), ("insertion", insertion)) if row["beaten_by_random"]]
        reasons.append(
            f"random maps beat it on {' and '.join(beaten)} AUC {differences}"
            if beaten
            else f"no better than random maps on deletion or insertion AUC beyond {BEAT_STANDARD_ERRORS:g} standard "
            f"errors {differences}"
        )
    else:
        worse = [name for name, row, higher in (("deletion", deletion, False), ("insertion", insertion, True))
                 if (row["mean_difference"] < 0 if higher else row["mean_difference"] > 0)]  # fmt: skip
        if worse:
            reasons.append(f"random maps do better on {' and '.join(worse)} AUC {differences}")
    spearman = figures["randomization_spearman"]
    if spearman is None:
        reasons.append("the randomisation check is undefined: its maps are constant")
    elif spearman > SANITY_THRESHOLD:
        reasons.append(
            f"maps barely change when the weights are randomised (Spearman {spearman:.2f} > {SANITY_THRESHOLD})"
        )
    if reasons:
        return "fail", "; ".join(reasons)
    won = " and ".join(name for name, row in (("deletion", deletion), ("insertion", insertion)) if row["beats_random"])
    return "pass", f"beats random maps on {won} AUC {differences} and passes the randomisation check"


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


class Measure:
    """The curves of one set of images, shared by every method measured on them."""

    def __init__(
        self,
        probabilities: Probabilities,
        x: torch.Tensor,
        target: torch.Tensor,
        masks: torch.Tensor | None,
        baseline: torch.Tensor,
    ) -> None:
        self.probabilities, self.x, self.target, self.baseline = probabilities, x, target, baseline
        if masks is not None and masks.dtype != torch.bool:  # class masks: the explained class's pixels
            masks = masks.to(target.device) == (target + 1).view(-1, 1, 1)
        self.masks = masks
        self.start = blurred(x)

    def figures(self, maps: torch.Tensor, randomised_maps: torch.Tensor | None) -> dict:
        """A method's figures, with its per-image AUCs under ``"per_image"`` (see :meth:`judge`)."""
        deletion = deletion_curves(self.probabilities, self.x, self.target, maps, self.baseline)
        insertion = insertion_curves(self.probabilities, self.x, self.target, maps, self.start)
        pointing = None if self.masks is None else pointing_game(maps, self.masks.to(maps.device)).float().mean()
        figures: dict = {
            "applies": True,
            "pointing_game": None if pointing is None else pointing.item(),
            "deletion_auc": curve_auc(deletion).mean().item(),
            "insertion_auc": curve_auc(insertion).mean().item(),
            "deletion_curve": [round(v, 4) for v in deletion.mean(dim=0).tolist()],
            "insertion_curve": [round(v, 4) for v in insertion.mean(dim=0).tolist()],
            "randomization_spearman": None,
            "sanity_check": None,
            "images": len(self.x),
            "per_image": {"deletion": curve_auc(deletion), "insertion": curve_auc(insertion)},
        }
        if randomised_maps is not None:
            rho = rank_correlation(maps, randomised_maps)
            defined = rho[~rho.isnan()]
            figures["randomization_undefined"] = int(rho.isnan().sum())  # images with a constant map
            if len(defined):
                spearman = defined.mean().item()
                figures["randomization_spearman"] = spearman
                figures["sanity_check"] = "pass" if spearman <= SANITY_THRESHOLD else "fail"
        return figures

    @staticmethod
    def judge(figures: dict, reference: dict) -> dict:
        """``figures`` with its comparison to the random maps' (``reference``) and its verdict; the per-image AUCs
        are dropped."""
        per_image, random = figures.pop("per_image"), reference["per_image"]
        figures["deletion_vs_random"] = paired_comparison(per_image["deletion"], random["deletion"],
                                                          higher_is_better=False)  # fmt: skip
        figures["insertion_vs_random"] = paired_comparison(per_image["insertion"], random["insertion"],
                                                           higher_is_better=True)  # fmt: skip
        figures["verdict"], figures["reason"] = verdict(figures)
        return figures


class ImageScores(nn.Module):
    """A model that returns class maps, seen through ``image_logits`` (its task's pooling): the N x classes scores
    the gradient methods explain."""

    def __init__(self, model: nn.Module, image_logits: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.model, self.image_logits = model, image_logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.image_logits(self.model(x))


def trust_figures(
    model: nn.Module,
    methods: Sequence[str],
    x: torch.Tensor,
    probabilities: Probabilities,
    masks: torch.Tensor | None,
    baseline: torch.Tensor,
    *,
    batch: int = 64,
    seed: int = 0,
    image_logits: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> dict[str, dict]:
    """The measures and verdict of each method in ``methods`` on the images ``x`` (model-ready), explaining the
    model's predicted class, plus ``random`` (uniform noise maps): the chance level every method is compared
    with, never itself judged. ``masks``: N x H x W object masks (bool), class masks (c + 1 for class c, 0 the
    background; the explained class's pixels are the object), or None for no pointing game. ``image_logits``:
    for a model that returns class maps (a weakseg run), how its task pools them into image scores, which the
    gradient methods explain; ``attention`` reads the maps themselves. A method that does not apply to the model
    is reported with its reason instead of figures."""
    target = torch.cat([probabilities(x[i : i + batch]).argmax(dim=1) for i in range(0, len(x), batch)])
    measure = Measure(probabilities, x, target, masks, baseline)
    generator = torch.Generator().manual_seed(seed)
    noise = torch.rand(x.shape[0], *x.shape[-2:], generator=generator).to(x.device)
    reference = measure.figures(noise, None)
    randomized = randomized_copy(model, seed)

    def explained(net: nn.Module, name: str) -> nn.Module:
        return net if image_logits is None or name == "attention" else ImageScores(net, image_logits)

    results: dict[str, dict] = {}
    stage = Stage(f"trust figures on {len(x)} images: methods done", len(methods))
    for name in methods:
        stage.advance(0)  # a line when the previous method took long
        started = time.perf_counter()
        method = create_method(name, explained(model, name), baseline=baseline)
        if isinstance(method, FeatureMaps):
            stage.advance()
            continue
        try:
            maps = attribute_in_batches(method, x, target, batch)
        except UserError as exc:  # a method that does not apply (attention on a classifier) says why
            results[name] = {"applies": False, "reason": str(exc)}
            stage.advance()
            continue
        randomized_method = create_method(name, explained(randomized, name), baseline=baseline)
        random_maps = attribute_in_batches(randomized_method, x, target, batch)
        results[name] = measure.judge(measure.figures(maps, random_maps), reference)
        results[name]["seconds"] = round(time.perf_counter() - started, 2)
        results[name]["notes"] = method.notes
        stage.advance()
    stage.close()
    reference.pop("per_image")
    results["random"] = {
        **reference,
        "verdict": "reference",
        "reason": "uniform noise maps: the chance level each method must beat",
        "notes": ["uniform noise maps: the chance level of each measure"],
    }
    return results


def first_test_batches(run: LoadedRun, count: int) -> list[torch.Tensor]:
    """The first ``count`` items of a run's test split, each part of its batches joined: images (model-ready),
    labels and, for scene data, masks. Fewer where the split is smaller."""
    loader = run.modality.prepare(run.recipe).loaders(run.recipe, run.device)["test"]
    parts: list[list[torch.Tensor]] = []
    seen = 0
    for batch in loader:
        taken = [part[: count - seen] for part in batch]
        parts.append([taken[0].float().contiguous(), *taken[1:]])
        seen += len(taken[0])
        if seen >= count:
            break
    return [torch.cat(column) for column in zip(*parts, strict=True)]


def first_test_images(run: LoadedRun, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``count`` images of a run's test split (model-ready) and their labels."""
    x, y, *_ = first_test_batches(run, count)
    return x, y


def trust_of_run(run: LoadedRun, count: int = 200, *, batch: int = 64) -> dict:
    """:func:`trust_figures` of every attribution method on the first ``count`` test images of an image run (or
    all of them where the split is smaller), with the protocol that produced them."""
    x, _, *scene_masks = first_test_batches(run, count)
    masks, mask_rule = object_masks_of(run.info["dataset"], x, run.info["mean"], run.info["std"],
                                       scene_masks[0] if scene_masks else None)  # fmt: skip
    baseline = black_baseline(run.info["mean"], run.info["std"])
    methods = [name for name in method_names() if name != "feature-maps"]
    image_logits = getattr(run.task, "image_logits", None)  # a weakseg run's model returns class maps
    figures = trust_figures(run.model, methods, x, partial(run.task.predict, run.model), masks, baseline, batch=batch,
                            image_logits=image_logits)  # fmt: skip
    size = run.info["sizes"]["test"]
    return {
        "protocol": {
            "images": f"the first {len(x)} images of the run's test split (all of it: {count} were asked for)"
            if len(x) < count
            else f"the first {len(x)} of the {size} images of the run's test split",
            "images_used": len(x),
            "target": "the model's predicted class",
            "pointing_game": mask_rule,
            "mask_share": None if masks is None or masks.dtype != torch.bool else masks.float().mean().item(),
            "deletion": f"{CURVE_STEPS} steps, removed pixels set to black, probability of the target",
            "insertion": (
                f"{CURVE_STEPS} steps from the image blurred by a Gaussian of sigma {BLUR_SIGMA:.3f} of its side, "
                "the image's pixels put back most salient first, probability of the target"
            ),
            "randomization": (
                "every layer re-initialised (reset_parameters, seed 0); Spearman rank correlation per image between "
                "the trained and the randomised model's maps, averaged over images whose maps are not constant"
            ),
            "sanity_threshold": SANITY_THRESHOLD,
            "sanity_rule": f"a method fails the randomisation check when its Spearman is above {SANITY_THRESHOLD}",
            "verdict_rule": VERDICT_RULE,
        },
        "methods": figures,
    }
