"""CIE Lab colour on whole batches of tensors, and the split-brain targets (seed 001): quantised L and joint ab.

The conversion is skimage's ``rgb2lab`` (sRGB, D65 white, 2-degree observer) written with tensor ops, so a
batch converts on the training device in one go; ``tests/data/test_lab.py`` checks it against skimage on real
photographs. It always runs in float32: under bf16 autocast the cube roots would lose two digits of L.

Networks see Lab scaled to about [-1, 1] (:func:`scale_lab`); the targets are computed from the unscaled values.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# sRGB (linear) -> XYZ, and the D65 reference white, as in skimage.color.
_RGB_TO_XYZ = torch.tensor(
    [[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169], [0.019334, 0.119193, 0.950227]]
)
_WHITE = torch.tensor([0.95047, 1.0, 1.08883])
_EPSILON = 0.008856  # (6/29)^3: below it the cube root is replaced by a line
_KAPPA = 7.787  # that line's slope

L_MAX = 100.0
# a and b are quantised over [-AB_RANGE, AB_RANGE): the sRGB gamut spans about a in [-86, 98], b in [-108, 95].
AB_RANGE = 110.0


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """N x 3 x H x W sRGB in [0, 1] -> L in [0, 100], a and b in about [-110, 110] (float32)."""
    rgb = rgb.float().clamp(0, 1)
    linear = torch.where(rgb > 0.04045, ((rgb + 0.055) / 1.055).pow(2.4), rgb / 12.92)
    xyz = torch.einsum("ij,njhw->nihw", _RGB_TO_XYZ.to(rgb.device), linear)
    xyz = xyz / _WHITE.to(rgb.device).view(1, 3, 1, 1)
    f = torch.where(xyz > _EPSILON, xyz.clamp(min=_EPSILON).pow(1 / 3), _KAPPA * xyz + 16 / 116)
    fx, fy, fz = f.unbind(1)
    return torch.stack([116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)], dim=1)


def lab_to_rgb(lab: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`rgb_to_lab`, clipped to [0, 1] (colours outside sRGB's gamut are clipped)."""
    lab = lab.float()
    fy = (lab[:, 0] + 16) / 116
    f = torch.stack([fy + lab[:, 1] / 500, fy, fy - lab[:, 2] / 200], dim=1)
    xyz = torch.where(f > _EPSILON ** (1 / 3), f.pow(3), (f - 16 / 116) / _KAPPA)
    xyz = xyz * _WHITE.to(lab.device).view(1, 3, 1, 1)
    linear = torch.einsum("ij,njhw->nihw", torch.linalg.inv(_RGB_TO_XYZ).to(lab.device), xyz).clamp(0, 1)
    return torch.where(linear > 0.0031308, 1.055 * linear.pow(1 / 2.4) - 0.055, linear * 12.92).clamp(0, 1)


def scale_lab(lab: torch.Tensor) -> torch.Tensor:
    """What the networks see: L to [-1, 1], a and b divided by 110."""
    return torch.cat([lab[:, :1] / (L_MAX / 2) - 1, lab[:, 1:] / AB_RANGE], dim=1)


def unscale_lab(scaled: torch.Tensor) -> torch.Tensor:
    return torch.cat([(scaled[:, :1].float() + 1) * (L_MAX / 2), scaled[:, 1:].float() * AB_RANGE], dim=1)


def quantise_l(lightness: torch.Tensor, bins: int) -> torch.Tensor:
    """L in [0, 100] -> bin index in [0, bins) (int64), equal-width bins."""
    return (lightness / L_MAX * bins).floor().long().clamp(0, bins - 1)


def quantise_ab(ab: torch.Tensor, bins: int) -> torch.Tensor:
    """N x 2 x h x w (a, b) -> one joint class ``a_bin * bins + b_bin`` in [0, bins**2) per pixel (seed 001)."""
    index = ((ab + AB_RANGE) / (2 * AB_RANGE) * bins).floor().long().clamp(0, bins - 1)
    return index[:, 0] * bins + index[:, 1]


def ab_bin_centres(bins: int) -> torch.Tensor:
    """(bins**2) x 2: the (a, b) value at the centre of each joint class, in class order."""
    centres = -AB_RANGE + (torch.arange(bins) + 0.5) * (2 * AB_RANGE / bins)
    a, b = torch.meshgrid(centres, centres, indexing="ij")
    return torch.stack([a.flatten(), b.flatten()], dim=1)


def l_bin_centres(bins: int) -> torch.Tensor:
    return (torch.arange(bins) + 0.5) * (L_MAX / bins)


def splitbrain_targets(
    lab: torch.Tensor, grid: tuple[int, int], l_bins: int, ab_bins: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The per-pixel classes the two halves predict, on the encoder's output ``grid``: (joint ab class, L class),
    each N x h x w int64. The image is averaged down to the grid in Lab, then quantised (the seed's downsampled,
    quantised ground truth)."""
    small = F.adaptive_avg_pool2d(lab.float(), grid)
    return quantise_ab(small[:, 1:], ab_bins), quantise_l(small[:, 0], l_bins)


def ab_from_logits(ab_logits: torch.Tensor, size: tuple[int, int], temperature: float = 0.38) -> torch.Tensor:
    """N x bins**2 x h x w class scores -> N x 2 x H x W (a, b): the annealed mean of Zhang et al.'s
    colourisation (softmax at ``temperature``, then the mean bin centre; vivid like the mode, smooth like the
    mean), upsampled bilinearly to ``size``."""
    bins = math.isqrt(ab_logits.shape[1])
    probs = (ab_logits.float() / temperature).softmax(dim=1)
    ab = torch.einsum("nqhw,qc->nchw", probs, ab_bin_centres(bins).to(probs.device))
    return F.interpolate(ab, size=size, mode="bilinear", align_corners=False)
