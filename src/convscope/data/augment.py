"""Batched augmentations: every sample of a batch gets its own random parameters.

torchvision.transforms.v2 draws one random parameter per call, so applied to a batch every
sample would get the same crop or flip. These ops work on a whole float N x C x H x W batch
(values in [0, 1] before Normalize) with tensor ops, on any device (the airbench pattern).

A random op is ``sample(n, generator)`` (parameters drawn from an explicit CPU generator, so
a run is reproducible whatever the device) followed by ``apply(x, params)``; calling
``op(x, generator)`` does both. Tests and callers can replay ``apply`` with known parameters.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import ClassVar, Literal, Protocol

import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF

from convscope.config import CROP_PADDING_MODES, AugmentConfig
from convscope.errors import UserError


class Op(Protocol):
    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor: ...


class RandomOp(ABC):
    """An op with per-sample parameters drawn on the CPU and applied on ``x``'s device."""

    moves_pixels: ClassVar[bool] = False  # geometric ops: pixel masks must move with the image

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return self.apply(x, self.sample(x.shape[0], generator).to(x.device))

    @abstractmethod
    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """Parameters for ``n`` samples (first dimension ``n``)."""

    @abstractmethod
    def apply(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """The op with the given per-sample parameters."""

    def apply_to_masks(self, masks: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """``masks`` (N x H x W class indices) moved as :meth:`apply` moves the image's pixels; unchanged by ops
        that only change values. Crops and flips only copy pixels, so the class indices come through exact."""
        if not self.moves_pixels:
            return masks
        return self.apply(masks[:, None].float(), params)[:, 0].round().to(masks.dtype)


class RandomCrop(RandomOp):
    """Pad by ``padding`` on every side, then crop back to the original size at a random offset."""

    _MODES = CROP_PADDING_MODES
    moves_pixels = True

    def __init__(self, padding: int, mode: Literal["reflect", "zeros"] = "reflect") -> None:
        if padding < 0:
            raise UserError(f"crop padding = {padding}: expected an integer >= 0")
        if mode not in self._MODES:
            raise UserError(f"crop padding mode = {mode!r}: expected one of {sorted(self._MODES)}")
        self.padding = padding
        self.mode = mode

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """(top, left) of each crop inside the padded image, each in [0, 2 * padding]."""
        return torch.randint(0, 2 * self.padding + 1, (n, 2), generator=generator)

    def apply(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        p = self.padding
        padded = F.pad(x, (p, p, p, p), mode=self._MODES[self.mode])
        rows = params[:, :1] + torch.arange(h, device=x.device)  # n x h
        cols = params[:, 1:] + torch.arange(w, device=x.device)  # n x w
        # One gather for the whole batch: the index tensors broadcast to n x c x h x w.
        samples = torch.arange(n, device=x.device)[:, None, None, None]
        channels = torch.arange(c, device=x.device)[None, :, None, None]
        return padded[samples, channels, rows[:, None, :, None], cols[:, None, None, :]]


class _RandomFlip(RandomOp):
    _flip: Callable[[torch.Tensor], torch.Tensor]
    moves_pixels = True

    def __init__(self, p: float = 0.5) -> None:
        if not 0.0 <= p <= 1.0:
            raise UserError(f"flip probability = {p}: expected a number in [0, 1]")
        self.p = p

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """True for the samples to flip."""
        return torch.rand(n, generator=generator) < self.p

    def apply(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        return torch.where(params.view(-1, 1, 1, 1), self._flip(x), x)


class HorizontalFlip(_RandomFlip):
    _flip = staticmethod(TF.horizontal_flip)


class VerticalFlip(_RandomFlip):
    _flip = staticmethod(TF.vertical_flip)


class Rotation(RandomOp):
    """Rotate each sample about its centre by an angle uniform in [-degrees, degrees].

    Positive angles turn counter-clockwise, as in torchvision; bilinear, zeros outside (masks: nearest).
    """

    moves_pixels = True

    def __init__(self, degrees: float) -> None:
        if not 0.0 <= degrees <= 180.0:
            raise UserError(f"rotation = {degrees}: expected degrees in [0, 180]")
        self.degrees = degrees

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """The angle of each sample, in degrees."""
        return (torch.rand(n, generator=generator) * 2 - 1) * self.degrees

    def apply(self, x: torch.Tensor, params: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
        n, _, h, w = x.shape
        radians = torch.deg2rad(params.to(x.dtype))
        cos, sin = torch.cos(radians), torch.sin(radians)
        # affine_grid maps output to input positions in [-1, 1] units per axis; the h/w factors
        # turn the pixel-space inverse rotation into those units, so non-square images stay undistorted.
        theta = torch.stack(
            [
                torch.stack([cos, -sin * (h / w), torch.zeros_like(cos)], dim=1),
                torch.stack([sin * (w / h), cos, torch.zeros_like(cos)], dim=1),
            ],
            dim=1,
        )
        grid = F.affine_grid(theta, [n, x.shape[1], h, w], align_corners=False)
        return F.grid_sample(x, grid, mode=mode, padding_mode="zeros", align_corners=False)

    def apply_to_masks(self, masks: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        # Nearest: interpolating class indices would invent classes between two neighbours.
        return self.apply(masks[:, None].float(), params, mode="nearest")[:, 0].round().to(masks.dtype)


class PCAColor(RandomOp):
    """AlexNet's colour augmentation: add ``sum_i alpha_i * eigenvalue_i * eigenvector_i`` to every pixel of an
    image, with ``alpha_i ~ N(0, std)`` drawn per image and the eigen-decomposition of the training pixels'
    channel covariance (:func:`convscope.data.split.color_pca`). It shifts colours along the directions in
    which natural variation of the data set lies (lighting, hue), not at random."""

    def __init__(self, eigenvalues: torch.Tensor, eigenvectors: torch.Tensor, std: float = 0.1) -> None:
        if not std >= 0:
            raise UserError(f"pca_color = {std}: expected a standard deviation >= 0")
        self.eigenvalues = eigenvalues.float()
        self.eigenvectors = eigenvectors.float()  # columns are the eigenvectors
        self.std = std

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """``alpha``: one weight per image and principal component."""
        return torch.randn(n, self.eigenvalues.numel(), generator=generator) * self.std

    def apply(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        vectors, values = self.eigenvectors.to(x.device), self.eigenvalues.to(x.device)
        shift = (params.to(x.dtype) * values) @ vectors.T  # n x C: one colour offset per image
        return x + shift[:, :, None, None]


def ten_crops(x: torch.Tensor, size: tuple[int, int], padding: int = 0) -> list[torch.Tensor]:
    """The four corner crops and the centre crop of ``size`` (h, w), then the same five flipped left-right
    (AlexNet's test-time views). ``padding`` first pads the images by reflection, so that crops of the full
    image size still differ (small images)."""
    if padding:
        x = F.pad(x, (padding, padding, padding, padding), mode="reflect")
    if size[0] > x.shape[-2] or size[1] > x.shape[-1]:
        raise UserError(f"test-time crops of {size[0]}x{size[1]} do not fit in {tuple(x.shape[-2:])} images")
    crops = list(TF.five_crop(x, list(size)))
    return crops + [TF.horizontal_flip(crop) for crop in crops]


class CenterCrop:
    """Crop the central ``size`` x ``size`` region (deterministic)."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise UserError(f"center_crop = {size}: expected an integer >= 1")
        self.size = size

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return TF.center_crop(x, [self.size, self.size])


class Normalize:
    """``(x - mean) / std`` per channel (deterministic)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        if len(mean) != len(std):
            raise UserError(f"mean has {len(mean)} values and std {len(std)}: expected one of each per channel")
        if any(not s > 0 for s in std):
            raise UserError(f"std = {list(std)}: expected values > 0")
        self.mean = list(mean)
        self.std = list(std)
        # Built once per device and dtype: a new tensor per batch would cost a host-to-device copy each time.
        self._cache: dict[tuple[torch.device, torch.dtype], tuple[torch.Tensor, torch.Tensor]] = {}

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        key = (x.device, x.dtype)
        if key not in self._cache:
            mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
            std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
            self._cache[key] = (mean, std)
        mean, std = self._cache[key]
        return (x - mean) / std


class Pipeline:
    """Ops applied in order, all drawing from the same generator."""

    def __init__(self, ops: Sequence[Op]) -> None:
        self.ops = tuple(ops)

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        for op in self.ops:
            x = op(x, generator)
        return x

    def with_masks(
        self, x: torch.Tensor, masks: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The ops on ``x`` (as :meth:`__call__`, same random draws) and the geometric ones on its ``masks``."""
        for op in self.ops:
            if isinstance(op, RandomOp):
                params = op.sample(x.shape[0], generator).to(x.device)
                x, masks = op.apply(x, params), op.apply_to_masks(masks, params)
            elif isinstance(op, CenterCrop):
                x, masks = op(x), op(masks)
            else:
                x = op(x, generator)
        return x, masks

    def __repr__(self) -> str:
        return f"Pipeline({', '.join(type(op).__name__ for op in self.ops)})"


def build_augment(
    cfg: AugmentConfig,
    *,
    train: bool = True,
    color_pca: tuple[torch.Tensor, torch.Tensor] | None = None,
    loader_flips: bool = False,
) -> Pipeline | None:
    """The pipeline for ``cfg``, or None when it does nothing.

    ``train=False`` keeps only the deterministic steps (the centre crop), which evaluation
    needs too so that it sees images of the size the network was trained on. ``color_pca`` is the
    training data's (eigenvalues, eigenvectors), which ``cfg.pca_color`` needs. ``loader_flips``: the loader
    mirrors the images itself (``hflip_mode = "alternate"`` needs to know each image and epoch, which a
    pipeline of batch ops does not), so the pipeline leaves the flip out.
    """
    ops: list[Op] = []
    if cfg.center_crop:
        ops.append(CenterCrop(cfg.center_crop))
    if train:
        if cfg.crop_padding:
            ops.append(RandomCrop(cfg.crop_padding, cfg.crop_padding_mode))
        if cfg.hflip and cfg.hflip_mode == "random":
            ops.append(HorizontalFlip())
        elif cfg.hflip and not loader_flips:
            raise UserError(f"augment.hflip_mode = {cfg.hflip_mode!r} is done by image classification's loader, "
                            "which this task does not use; set augment.hflip_mode = 'random'")  # fmt: skip
        if cfg.vflip:
            ops.append(VerticalFlip())
        if cfg.rotation:
            ops.append(Rotation(cfg.rotation))
        if cfg.pca_color:
            if color_pca is None:
                raise ValueError("augment.pca_color needs the training data's colour PCA (color_pca)")
            ops.append(PCAColor(*color_pca, std=cfg.pca_color))
    return Pipeline(ops) if ops else None
