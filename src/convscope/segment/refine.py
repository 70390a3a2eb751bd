"""Dense-CRF refinement of item-versus-background masks (Krähenbühl & Koltun 2011, with ``pydensecrf``).

A map model's masks follow its maps, which are coarse (output stride 4, bilinear): weakly supervised maps are
blobs that spill past an item's outline, because an image label says nothing about where an item ends. Most weak
segmentation work (SEC, AffinityNet, DeepLab's own pipeline) refines such masks with a fully connected CRF whose
pairwise terms pull pixels of like intensity and nearby position to one label. Here the CRF decides only item
against background; an item pixel keeps the class its rule gave it. Its unary is the rule's foreground score
squashed around the rule's threshold, ``sigmoid((score - threshold) / temperature)``; the temperature, in units of
the score's spread, and the kernel widths are chosen on the validation scenes like every other threshold, and the
refinement is kept only where it beats the raw masks there. It applies to every rule alike (attention, CAM,
Grad-CAM and the supervised argmax), so comparisons between them stay fair.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from convscope.console import Stage

# Temperatures as fractions of the score's standard deviation; bilateral (position, intensity) widths in pixels
# and grey levels of 0-255. On FashionScenes the valid scenes chose 0.4 x, 40, 5 for the weak masks (test mean IoU
# 0.392 raw, 0.641 refined) and a temperature of 0.14, 10, 10 for the supervised ones (0.659, 0.721).
TEMPERATURES = (0.1, 0.2, 0.4)
BILATERAL = ((10, 5), (10, 10), (20, 5), (40, 5))
BILATERAL_COMPAT = 10.0
SMOOTHNESS = {"sxy": 1.0, "compat": 3.0}  # a small Gaussian kernel against isolated pixels
ITERATIONS = 5
CHOOSE_ON = 1000  # validation scenes the CRF's parameters are chosen on: each setting costs ~7 ms a scene


def crf_grid(spread: float) -> list[dict[str, float]]:
    """The settings tried, with the temperatures in the score's own units (``spread``: its standard deviation)."""
    return [{"temperature": round(k * spread, 4), "sxy": sxy, "srgb": srgb}
            for k in TEMPERATURES for sxy, srgb in BILATERAL]  # fmt: skip


def refine_foreground(scores: torch.Tensor, threshold: float, images: torch.Tensor, params: dict[str, float]):
    """Item (True) or background per pixel, N x H x W, from scores N x H x W and uint8 images N x C x H x W."""
    import pydensecrf.densecrf as dcrf
    from pydensecrf.utils import create_pairwise_bilateral, create_pairwise_gaussian

    height, width = scores.shape[-2:]
    p = torch.sigmoid((scores.float() - threshold) / params["temperature"]).clamp(1e-5, 1 - 1e-5)
    unary = (-torch.stack([1 - p, p], dim=1).log()).flatten(2).numpy()  # N x 2 x HW
    smooth = create_pairwise_gaussian(sdims=(SMOOTHNESS["sxy"],) * 2, shape=(height, width))
    pictures = images.numpy()
    foreground = np.empty((len(scores), height, width), dtype=bool)
    for i in range(len(scores)):
        crf = dcrf.DenseCRF2D(width, height, 2)
        crf.setUnaryEnergy(np.ascontiguousarray(unary[i], dtype=np.float32))
        crf.addPairwiseEnergy(smooth, compat=SMOOTHNESS["compat"])
        bilateral = create_pairwise_bilateral(sdims=(params["sxy"],) * 2, schan=(params["srgb"],) * pictures.shape[1],
                                              img=pictures[i], chdim=0)  # fmt: skip
        crf.addPairwiseEnergy(bilateral, compat=BILATERAL_COMPAT)
        q = np.array(crf.inference(ITERATIONS)).reshape(2, height, width)
        foreground[i] = q[1] > q[0]
    return torch.from_numpy(foreground)


def refined_masks(classes: torch.Tensor, scores: torch.Tensor, threshold: float, images: torch.Tensor,
                  params: dict[str, float]) -> torch.Tensor:  # fmt: skip
    """Masks (0 background, c + 1 class c) with the CRF's item pixels carrying the rule's class."""
    return torch.where(refine_foreground(scores, threshold, images, params), classes.long() + 1, 0)


def choose_refinement(classes: torch.Tensor, scores: torch.Tensor, threshold: float, images: torch.Tensor,
                      truth: torch.Tensor, score_of: Callable[[torch.Tensor, torch.Tensor], float]):  # fmt: skip
    """The CRF setting with the best ``score_of(masks, truth)`` on the first ``CHOOSE_ON`` validation scenes, or
    ``None`` where no setting beats the raw masks there; the winner's score; and the sweep, each setting with its
    score as ``valid_mean_iou`` (the raw masks first, as ``{"crf": None}``)."""
    part = slice(0, CHOOSE_ON)
    classes, scores, images, truth = classes[part], scores[part], images[part], truth[part]
    best, best_score = None, score_of(torch.where(scores.float() > threshold, classes.long() + 1, 0), truth)
    sweep = [{"crf": None, "valid_mean_iou": best_score}]
    grid = crf_grid(float(scores.float().std()))
    with Stage("CRF search: settings tried", len(grid)) as stage:
        for params in grid:
            score = score_of(refined_masks(classes, scores, threshold, images, params), truth)
            sweep.append({**params, "valid_mean_iou": score})
            if score > best_score:
                best, best_score = params, score
            stage.advance()
    return best, best_score, sweep
