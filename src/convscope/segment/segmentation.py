"""From a model's class maps to pixel masks, and how good the masks are against the true ones.

Three rules turn maps into masks, each with its thresholds chosen on the validation scenes (the mean IoU of
:mod:`convscope.metrics.segmentation`) and then measured once on the test scenes:

- ``attention`` (seed 000, task ``weakseg``): the argmax class where ``sigmoid(logsumexp over classes)`` exceeds
  a threshold, background elsewhere; the argmax runs over the classes the image-level prediction finds (a
  positive logit; the top class when none is), as the CAM rule keeps an image's probable classes only;
- ``cam`` and ``gradcam`` (the GAP softmax classifier): for each of an image's ``TOP`` most probable classes
  whose probability reaches a class threshold, its class activation map (Zhou et al. 2016: the classifier's own
  class map) or captum's Grad-CAM at the last convolution of the body (through
  :class:`convscope.explain.methods.GradCam`), each scaled to a maximum of 1; a pixel takes the class with the
  highest map where it exceeds a threshold, the background elsewhere;
- ``argmax`` (task ``segment``, trained with the masks): the most probable of the 11 classes, the item classes
  limited to those the image-level prediction finds (a class threshold, 0 for none).

Every rule's item-versus-background decision may then be refined by a dense CRF (:mod:`convscope.segment.refine`), its
settings chosen on the validation scenes too and kept only where they beat the raw masks there. Both the raw and
the refined figures are written.

The run's choices and figures go to ``RUN_DIR/segmentation.json``; ``convscope segment`` reads them back.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torchmetrics.segmentation import MeanIoU

from convscope.console import note
from convscope.engine.task import MEASURES
from convscope.errors import UserError
from convscope.explain.methods import GradCam
from convscope.metrics.segmentation import segmentation_metrics, summarize_segmentation
from convscope.report.segmentation import plot_threshold_sweep
from convscope.run import damaged, read_json, write_json, writing
from convscope.segment.refine import CHOOSE_ON, choose_refinement, crf_grid, refined_masks
from convscope.tasks.weakseg import class_maps

SEGMENTATION_FILE = "segmentation.json"
THRESHOLDS = tuple(round(0.1 * i, 1) for i in range(1, 10))
# The attention's thresholds as logits, in half steps: sigmoid(-2) = 0.12 ... sigmoid(15.5) = 1 - 2e-7. With C classes
# at logit 0 the attention is already sigmoid(log C) (0.91 for 10), so the useful thresholds lie near 1; a small
# smooth-max r (a mean-like aggregation) puts them high (8.5 for r = 0.1 on FashionScenes).
ATTENTION_LOGITS = tuple(0.5 * t for t in range(-4, 32))
CLASS_THRESHOLDS = (0.05, 0.1, 0.2, 0.3, 0.5)
ARGMAX_CLASS_THRESHOLDS = (0.0, 0.5, 0.7, 0.8, 0.9, 0.95)  # on the segment task's image-level probabilities
TOP = 3  # classes a CAM mask chooses from in each image: a scene holds up to 3 items
CHUNK = 500  # images per metric update: bounds the memory of the one-hot masks inside torchmetrics


@dataclass
class PixelScores:
    """A class (N x H x W item class indices) and a score per pixel, a logit for the attention: background at or
    below the threshold."""

    classes: torch.Tensor
    scores: torch.Tensor

    def masks(self, threshold: float | None = None, logit_threshold: float | None = None):
        """(masks: 0 background, c + 1 class c; the score in [0, 1], for the overlay's saturation). The attention
        rule's scores are logits, compared with ``logit_threshold``; the others' with ``threshold``."""
        scores = self.scores.float()
        if logit_threshold is not None:
            return torch.where(scores > logit_threshold, self.classes.long() + 1, 0), scores.sigmoid()
        return torch.where(scores > threshold, self.classes.long() + 1, 0), scores

    @staticmethod
    def cat(parts: Sequence[PixelScores]) -> PixelScores:
        return PixelScores(torch.cat([p.classes for p in parts]), torch.cat([p.scores for p in parts]))


@dataclass
class RankedMaps:
    """Per image its ``TOP`` most probable classes (N x TOP), their probabilities and a map for each in [0, 1]
    (N x TOP x H x W): CAM and Grad-CAM scaled to a maximum of 1, the supervised model's odds against the
    background."""

    classes: torch.Tensor
    probs: torch.Tensor
    maps: torch.Tensor

    def pixel_scores(self, class_threshold: float) -> PixelScores:
        """Per pixel the best map among the classes at least ``class_threshold`` probable (the image's top class
        always, as the attention rule keeps it), and its class."""
        kept = (self.probs >= class_threshold).index_fill(1, torch.tensor([0], device=self.probs.device), True)
        kept = self.maps.float() * kept[:, :, None, None]
        best, which = kept.max(dim=1)
        return PixelScores(self.classes.gather(1, which.flatten(1)).view_as(which), best)

    def masks(self, class_threshold: float, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
        return self.pixel_scores(class_threshold).masks(threshold)

    @staticmethod
    def cat(parts: Sequence[RankedMaps]) -> RankedMaps:
        return RankedMaps(*(torch.cat([getattr(p, k) for p in parts]) for k in ("classes", "probs", "maps")))


def _upsampled(maps: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Class maps bilinearly at the image's ``size``, as logits (seed 000 upsamples before the sigmoid)."""
    maps = maps.float()
    return maps if tuple(maps.shape[-2:]) == tuple(size) else F.interpolate(maps, size=tuple(size), mode="bilinear")


def attention_scores(task: Any, model: nn.Module, x: torch.Tensor) -> PixelScores:
    """The attention kept as its logit, ``logsumexp over classes``: thresholds near 1 stay apart in float16. A pixel's
    class is the best of the image's predicted classes: a class the image-level detector rejects wins no pixel
    (on FashionScenes this took the test mean IoU of a 15-epoch model from 0.111 to 0.193)."""
    raw = class_maps(model, x).float()
    logits = task.image_logits(raw)
    found = (logits > 0).scatter(1, logits.argmax(dim=1, keepdim=True), True)
    maps = _upsampled(raw, x.shape[-2:])
    classes = maps.masked_fill(~found[:, :, None, None], float("-inf")).argmax(dim=1)
    return PixelScores(classes.to(torch.uint8), torch.logsumexp(maps, dim=1).half())


def argmax_scores(task: Any, model: nn.Module, x: torch.Tensor) -> RankedMaps:
    """Task ``segment`` (channel 0 the background): the image's ``TOP`` classes by image-level probability (each
    class's highest pixel probability, :meth:`SegmentTask.predict`) and, per class, ``sigmoid(logit - background
    logit)``, above 0.5 where the class beats the background. With the class threshold 0 this is the plain argmax
    among those classes; a higher one lets only classes the image-level prediction finds win pixels, as the
    attention rule does: an item's pixels then stop splitting between look-alike classes (shirt, T-shirt, coat)."""
    maps = _upsampled(class_maps(model, x), x.shape[-2:])
    probs, top = maps.softmax(dim=1)[:, 1:].amax(dim=(2, 3)).topk(min(TOP, maps.shape[1] - 1), dim=1)
    items = maps[:, 1:].gather(1, top[:, :, None, None].expand(-1, -1, *maps.shape[-2:]))
    return RankedMaps(top, probs, torch.sigmoid(items - maps[:, :1]).half())


def _scaled(maps: torch.Tensor) -> torch.Tensor:
    """Negative evidence cut, then each map divided by its maximum (Zhou et al.'s normalisation)."""
    maps = maps.float().clamp(min=0)
    return maps / maps.amax(dim=(-2, -1), keepdim=True).clamp(min=1e-6)


def cam_scores(task: Any, model: nn.Module, x: torch.Tensor) -> RankedMaps:
    maps = class_maps(model, x).float()
    probs, top = task.image_logits(maps).softmax(dim=1).topk(min(TOP, maps.shape[1]), dim=1)
    chosen = maps.gather(1, top[:, :, None, None].expand(-1, -1, *maps.shape[-2:]))
    return RankedMaps(top, probs, _scaled(_upsampled(chosen, x.shape[-2:])).half())


class ImageLogits(nn.Module):
    """A map model and its task's aggregation: class logits N x C, what Grad-CAM differentiates."""

    def __init__(self, model: nn.Module, task: Any) -> None:
        super().__init__()
        self.net, self.task = model, task

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.task.image_logits(class_maps(self.net, x))


def gradcam_layer(model: nn.Module) -> str:
    """The last convolution of the body, under the :class:`ImageLogits` wrapper's names."""
    convolutions = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and n.startswith("features.")]
    if not convolutions:
        raise UserError("gradcam needs a model with convolutions in its body (features)")
    return f"net.{convolutions[-1]}"


def gradcam_scores(task: Any, model: nn.Module, x: torch.Tensor) -> RankedMaps:
    wrapped = ImageLogits(model, task)
    with torch.no_grad():
        logits = wrapped(x)
        probs, top = logits.softmax(dim=1).topk(min(TOP, logits.shape[1]), dim=1)
    method = GradCam(wrapped, layer=gradcam_layer(model))
    maps = torch.stack([method.attribute(x, top[:, k]) for k in range(top.shape[1])], dim=1)
    return RankedMaps(top, probs, _scaled(maps).half())


# rule -> (scores of one batch, the parameters tried on the validation scenes)
Scorer = Callable[[Any, nn.Module, torch.Tensor], PixelScores | RankedMaps]
RULES: dict[str, tuple[Scorer, list[dict[str, float]]]] = {
    "attention": (attention_scores, [{"logit_threshold": t} for t in ATTENTION_LOGITS]),
    "cam": (cam_scores, [{"class_threshold": c, "threshold": t} for c in CLASS_THRESHOLDS for t in THRESHOLDS]),
    "gradcam": (gradcam_scores, [{"class_threshold": c, "threshold": t} for c in CLASS_THRESHOLDS for t in THRESHOLDS]),
    "argmax": (argmax_scores, [{"class_threshold": c, "threshold": 0.5} for c in ARGMAX_CLASS_THRESHOLDS]),
}

# Without valid scenes with masks (CIFAR-10): seed 000's logit 0 is attention 0.5.
DEFAULTS = {"attention": {"logit_threshold": 0.0}, "cam": {"class_threshold": 0.2, "threshold": 0.5},
            "gradcam": {"class_threshold": 0.2, "threshold": 0.5},
            "argmax": {"class_threshold": 0.0, "threshold": 0.5}}  # fmt: skip


def collect(
    scorer: Scorer, task: Any, model: nn.Module, loader: Iterable, *, bf16: bool
) -> tuple[PixelScores | RankedMaps, torch.Tensor]:
    """The rule's scores and the true masks over a loader of ``(x, labels, masks)`` batches, in eval mode."""
    parts, truth = [], []
    model.eval()
    grad = scorer is gradcam_scores  # Grad-CAM differentiates; the others need no graph
    for x, _, masks in loader:
        with torch.set_grad_enabled(grad), torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
            parts.append(scorer(task, model, x))
        truth.append(masks.cpu())
    parts = [_on_cpu(p) for p in parts]
    return type(parts[0]).cat(parts), torch.cat(truth)


def _on_cpu(scores: PixelScores | RankedMaps) -> PixelScores | RankedMaps:
    return type(scores)(*(getattr(scores, k).detach().cpu() for k in scores.__dataclass_fields__))


def measure_masks(pred: torch.Tensor, truth: torch.Tensor, names: Sequence[str]) -> dict[str, Any]:
    """Per-class IoU, mean IoU, seed 002's SA, pixel accuracy of predicted against true masks (N x H x W)."""
    metrics = segmentation_metrics(len(names))
    for start in range(0, len(pred), CHUNK):
        metrics.update(pred[start : start + CHUNK], truth[start : start + CHUNK])
    return summarize_segmentation(metrics.compute(), names)


def mean_iou(pred: torch.Tensor, truth: torch.Tensor, classes: int) -> float:
    """The headline figure alone (torchmetrics' per-image MeanIoU over the classes that occur), to choose with."""
    metric = MeanIoU(classes, per_class=True, input_format="index")
    for start in range(0, len(pred), CHUNK):
        metric.update(pred[start : start + CHUNK], truth[start : start + CHUNK])
    per_class = metric.compute()
    return float(per_class[per_class >= 0].mean())


def choose(scores: PixelScores | RankedMaps, truth: torch.Tensor, grid: list[dict[str, float]], classes: int):
    """The parameters of ``grid`` with the best mean IoU, that IoU, and the sweep: every setting with its IoU."""
    sweep = [{**params, "valid_mean_iou": mean_iou(scores.masks(**params)[0], truth, classes)} for params in grid]
    best = max(range(len(grid)), key=lambda index: sweep[index]["valid_mean_iou"])
    return grid[best], sweep[best]["valid_mean_iou"], sweep


def foreground(scores: PixelScores | RankedMaps, params: dict[str, float]) -> tuple[PixelScores, float]:
    """Any rule's scores as one class and one score per pixel, and the score above which a pixel is an item."""
    if isinstance(scores, RankedMaps):
        return scores.pixel_scores(params["class_threshold"]), params["threshold"]
    return scores, params["logit_threshold"] if "logit_threshold" in params else params["threshold"]


def rule_masks(scores: PixelScores | RankedMaps, params: dict[str, float], images: torch.Tensor,
               crf: dict[str, float] | None) -> torch.Tensor:  # fmt: skip
    """The masks of a rule's ``params``, refined by the CRF setting ``crf`` where there is one."""
    if crf is None:
        return scores.masks(**params)[0]
    pixels, threshold = foreground(scores, params)
    return refined_masks(pixels.classes, pixels.scores, threshold, images, crf)


def _measure_rule(rule: str, task: Any, model: nn.Module, loaders: dict[str, Any], names: list[str],
                  bf16: bool) -> dict[str, Any]:  # fmt: skip
    scorer, grid = RULES[rule]
    params, valid_iou, crf, crf_valid_iou, sweep, crf_sweep = DEFAULTS[rule], None, None, None, [], []
    if "valid" in loaders:
        scores, truth = collect(scorer, task, model, loaders["valid"], bf16=bf16)
        params, valid_iou, sweep = choose(scores, truth, grid, len(names))
        pixels, threshold = foreground(scores, params)
        print(f"{rule} masks: choosing a dense CRF on {min(len(truth), CHOOSE_ON)} valid scenes "
              f"({len(crf_grid(1.0))} settings)", flush=True)  # fmt: skip
        crf, crf_valid_iou, crf_sweep = choose_refinement(
            pixels.classes, pixels.scores, threshold, loaders["valid"].data.images, truth,
            lambda m, t: mean_iou(m, t, len(names)))  # fmt: skip
    scores, truth = collect(scorer, task, model, loaders["test"], bf16=bf16)
    images = loaders["test"].data.images
    result = {"params": params, "valid_mean_iou": valid_iou, **measure_masks(scores.masks(**params)[0], truth, names),
              "sweep": sweep, "crf_sweep": crf_sweep}  # fmt: skip
    result["crf"] = None if crf is None else {
        "params": crf, "valid_mean_iou": crf_valid_iou,
        **measure_masks(rule_masks(scores, params, images, crf), truth, names)}  # fmt: skip
    return result


@MEASURES.register("masks")
def measure_run(task: Any, model: nn.Module, loaders: dict[str, Any], run_dir: Path, info: dict[str, Any],
                precision: str) -> dict[str, Any]:  # fmt: skip
    """Choose each of the task's mask rules' thresholds and CRF on the valid scenes, measure them on the test scenes,
    write ``segmentation.json`` (with every setting tried and its valid mean IoU) and a plot of the threshold sweep
    per rule (``plots/threshold-sweep-RULE.png``); the summary's fields. Nothing for data without masks (CIFAR-10)."""
    if not info.get("masks"):
        return {}
    names = [info["background"], *info["classes"]]
    rules = ("cam", "gradcam") if task.rule == "cam" else (task.rule,)
    results = {}
    for rule in rules:
        started = time.perf_counter()
        results[rule] = _measure_rule(rule, task, model, loaders, names, bf16=precision == "bf16")
        results[rule]["seconds"] = round(time.perf_counter() - started, 1)
        if results[rule]["sweep"]:
            plot_threshold_sweep(rule, results[rule]["sweep"], results[rule]["params"],
                                 run_dir / "plots" / f"threshold-sweep-{rule}.png")  # fmt: skip
        raw, crf = results[rule], results[rule]["crf"]
        chosen = "the valid scenes" if raw["valid_mean_iou"] is not None else "no valid scenes: the default"
        refined = (f"; refined by the CRF {crf['params']}: {crf['mean_iou']:.4f}" if crf
                   else "; no CRF setting beat the raw masks on the valid scenes")  # fmt: skip
        print(f"{rule} masks: mean IoU {raw['mean_iou']:.4f} on the test scenes ({raw['params']}, chosen on {chosen})"
              f"{refined if raw['valid_mean_iou'] is not None else ''}", flush=True)  # fmt: skip
    if "gradcam" in results:
        results["gradcam"]["layer"] = gradcam_layer(model).removeprefix("net.")
    write_json(run_dir / SEGMENTATION_FILE, {"classes": names, "rules": results})
    return {"segmentation": {rule: {"mean_iou": (r["crf"] or r)["mean_iou"], "raw_mean_iou": r["mean_iou"],
                                    **r["params"], "crf": r["crf"] and r["crf"]["params"]}
                             for rule, r in results.items()}}  # fmt: skip


def read_rule(run_dir: Path, task: Any) -> tuple[str, dict[str, float], dict[str, float] | None]:
    """The run's own mask rule, the parameters chosen for it (defaults for a run trained without masks) and its CRF
    setting (``None``: raw masks)."""
    rule = task.rule
    path = run_dir / SEGMENTATION_FILE
    if path.is_file():
        rules = read_json(path, keys=("rules",))["rules"]
        if isinstance(rules, dict) and rule in rules:
            try:
                crf = rules[rule].get("crf")
                params, crf_params = rules[rule]["params"], crf and crf["params"]
            except (AttributeError, KeyError, TypeError):  # edited by hand, or cut short
                raise damaged(path, f"lacks the parameters of the {rule!r} rule") from None
            if isinstance(params, dict) and (crf_params is None or isinstance(crf_params, dict)):
                return rule, params, crf_params
            raise damaged(path, f"holds no parameters for the {rule!r} rule")
    return rule, DEFAULTS[rule], None


def segment_images(run: Any, paths: Sequence[str], out: Path) -> list[dict[str, Any]]:
    """``convscope segment``: per image, its class mask (palette PNG), the HSV overlay and the classes found with
    their share of pixels, under ``out``. An image of another size than the run's is resized to it, and the mask
    scaled back to the image (nearest), with a note saying so."""
    from torchvision.transforms.v2 import functional as TF

    from convscope.data.augment import Normalize
    from convscope.data.images import conversion_note, decode_image
    from convscope.report.segmentation import grey, hsv_rendering, save_palette_png

    if run.task.rule is None:
        raise UserError(f"run '{run.run_dir}' is a {run.task.name} run: segment needs a class-map run (task weakseg "
                        "or segment)")  # fmt: skip
    rule, params, crf = read_rule(run.run_dir, run.task)
    if not (run.run_dir / SEGMENTATION_FILE).is_file():
        note(f"run '{run.run_dir}' has not chosen its mask thresholds ({SEGMENTATION_FILE} is missing: it had no "
             f"scenes with masks to choose them on); using the defaults {params}")  # fmt: skip
    scorer = RULES[rule][0]
    size, channels = tuple(run.info["image_size"]), run.info["channels"]
    names = [run.info.get("background", "background"), *run.classes]
    normalize = Normalize(run.info["mean"], run.info["std"])
    out.mkdir(parents=True, exist_ok=True)
    results, used = [], set()
    run.model.eval()
    for given in paths:
        path = Path(given)
        if not path.is_file():
            raise UserError(f"input image '{path}' does not exist")
        image = decode_image(path, channels)
        original = tuple(image.shape[-2:])
        pixels = image if original == size else TF.resize(image, list(size), antialias=True)
        change = conversion_note(path, channels, size, "squash")
        if change:  # the mask is scaled back to the whole image, so nothing is cropped away
            note(f"{change}, the run's image size; its mask scaled back to the image")
        x = normalize(pixels[None].float().div(255).to(run.device))
        with torch.set_grad_enabled(scorer is gradcam_scores):
            scores = _on_cpu(scorer(run.task, run.model, x))
        masks, saturation = scores.masks(**params)
        if crf is not None:  # the refinement the run chose on its valid scenes
            masks = rule_masks(scores, params, pixels[None].cpu(), crf)
        mask = F.interpolate(masks[:, None].float().cpu(), size=original, mode="nearest")[0, 0].long()
        saturation = F.interpolate(saturation[:, None].float().cpu(), size=original, mode="bilinear")[0, 0]
        stem = path.stem if path.stem not in used else f"{path.stem}-{len(used)}"
        used.add(stem)
        save_palette_png(mask, len(run.classes), out / f"{stem}-mask.png")
        overlay = hsv_rendering(
            (mask - 1).clamp(min=0), saturation * (mask > 0), grey(image[None])[0], len(run.classes)
        )
        with writing(out / f"{stem}-overlay.png"):
            Image.fromarray((overlay * 255).round().astype("uint8")).save(out / f"{stem}-overlay.png")
        counts = torch.bincount(mask.flatten(), minlength=len(names))
        found = [{"class": names[c], "share": round(float(counts[c]) / mask.numel(), 4)}
                 for c in counts.argsort(descending=True).tolist() if counts[c] > 0]  # fmt: skip
        results.append({"image": str(path), "mask": str(out / f"{stem}-mask.png"),
                        "overlay": str(out / f"{stem}-overlay.png"), "classes": found})  # fmt: skip
    write_json(out / "segments.json", {"rule": rule, "params": params, "crf": crf, "images": results})
    return results
