"""Deterministic train/valid split and per-channel statistics."""

from __future__ import annotations

import torch

from convscope.errors import UserError

# Images per chunk in channel_stats are chosen so a chunk holds about this many values:
# bounded memory whatever the image size, even for a memory-mapped 50,000-image cache.
_CHUNK_VALUES = 2**22


def train_valid_split(
    labels: torch.Tensor, valid_fraction: float, seed: int, *, field: str = "valid_fraction"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Split sample indices into (train, valid), stratified by class and fixed by ``seed``.

    Each class gives ``round(valid_fraction * class size)`` samples to the valid set, but
    always keeps at least one for training. Both index tensors are sorted, so they keep the
    data order (the loader shuffles). ``field`` names the fraction in the error message
    (the same split also holds out a test set, as ``data.test_fraction``).
    """
    if not 0.0 <= valid_fraction < 1.0:
        raise UserError(f"{field} = {valid_fraction}: expected a number in [0, 1)")
    labels = labels.reshape(-1).long()
    if valid_fraction == 0.0 or labels.numel() == 0:
        return torch.arange(labels.numel()), torch.empty(0, dtype=torch.long)

    generator = torch.Generator().manual_seed(seed)
    shuffled = torch.randperm(labels.numel(), generator=generator)
    # A stable sort by label groups each class while keeping the random order inside it,
    # so the first k of every class group are a uniform random draw from that class.
    grouped = shuffled[torch.sort(labels[shuffled], stable=True).indices]
    grouped_labels = labels[grouped]
    counts = torch.bincount(grouped_labels)
    starts = torch.cumsum(counts, 0) - counts
    rank_in_class = torch.arange(labels.numel()) - starts[grouped_labels]
    take = torch.minimum(torch.round(counts.double() * valid_fraction).long(), (counts - 1).clamp(min=0))
    in_valid = rank_in_class < take[grouped_labels]
    return grouped[~in_valid].sort().values, grouped[in_valid].sort().values


def channel_stats(images: torch.Tensor) -> tuple[list[float], list[float]]:
    """Mean and (population) standard deviation of each channel of uint8 NCHW images, in [0, 1] units.

    Counts how often each of the 256 values occurs per channel, chunk by chunk, then takes the
    moments in float64: exact, and much faster than summing squares in float64.
    """
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise ValueError(f"images must be uint8 NCHW, got {images.dtype} {tuple(images.shape)}")
    n, channels = images.shape[:2]
    if n == 0:
        raise UserError("cannot compute channel mean/std of an empty image set")
    per_chunk = max(1, _CHUNK_VALUES // images[0].numel())
    histogram = torch.zeros(channels, 256, dtype=torch.int64)
    for start in range(0, n, per_chunk):
        chunk = images[start : start + per_chunk]
        for c in range(channels):
            histogram[c] += torch.bincount(chunk[:, c].reshape(-1), minlength=256)
    values = torch.arange(256, dtype=torch.float64) / 255.0
    weights = histogram.double() / histogram.sum(dim=1, keepdim=True)
    mean = (weights * values).sum(dim=1)
    std = (weights * (values - mean[:, None]) ** 2).sum(dim=1).sqrt()
    return mean.tolist(), std.tolist()


def color_pca(images: torch.Tensor, max_pixels: int = 2**20, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvalues (ascending) and eigenvectors (columns) of the channel covariance of uint8 NCHW images in
    [0, 1] units, for AlexNet's PCA colour augmentation. Estimated from the pixels of random images (drawn with
    ``seed``), at most about ``max_pixels``: a C x C covariance needs no more, whatever the data set's size."""
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(f"images must be non-empty uint8 NCHW, got {images.dtype} {tuple(images.shape)}")
    n, channels, height, width = images.shape
    keep = min(n, max(1, max_pixels // (height * width)))
    index = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:keep].sort().values
    values = images[index].transpose(0, 1).reshape(channels, -1).double() / 255
    covariance = torch.cov(values).reshape(channels, channels)
    eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
    return eigenvalues.clamp(min=0).float(), eigenvectors.float()
