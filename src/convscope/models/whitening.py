"""airbench's whitening first layer: a frozen 2x2 convolution that whitens the image's patches, set from the
training data before training (github.com/KellerJordan/cifar10-airbench, ``init_whitening_conv``).

Its filters are the eigenvectors of the patches' covariance, each scaled by 1 / sqrt(eigenvalue + eps), and their
negatives (so a GELU after it keeps both signs of each component): 2 x C x 2 x 2 output channels. The layer starts
the network from decorrelated inputs, which is what lets airbench train in few epochs. Only its bias is trained;
the filters are a buffer, saved with the weights and never touched by the optimiser or weight decay.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# How many training images the patch covariance is estimated from (airbench: 5,000). 31 x 31 patches each at 32 x 32.
FIT_IMAGES = 5000


class PatchWhitening(nn.Module):
    def __init__(self, in_channels: int, patch_size: int = 2, eps: float = 5e-4) -> None:
        super().__init__()
        self.in_channels, self.patch_size, self.eps = in_channels, patch_size, eps
        dims = in_channels * patch_size * patch_size
        self.register_buffer("weight", torch.zeros(2 * dims, in_channels, patch_size, patch_size))
        self.bias = nn.Parameter(torch.zeros(2 * dims))

    @property
    def out_channels(self) -> int:
        return self.weight.shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight.to(x.dtype), self.bias.to(x.dtype))

    @torch.no_grad()
    def fit(self, images: torch.Tensor) -> None:
        """Set the filters from ``images`` (N x C x H x W, normalised as the network will see them)."""
        c, p = self.in_channels, self.patch_size
        patches = images.float().unfold(2, p, 1).unfold(3, p, 1).transpose(1, 3).reshape(-1, c * p * p)
        covariance = patches.T @ patches / len(patches)
        eigenvalues, eigenvectors = torch.linalg.eigh(covariance)  # ascending; flipped: strongest component first
        filters = (eigenvectors.T / (eigenvalues[:, None] + self.eps).sqrt()).flip(0).reshape(-1, c, p, p)
        self.weight.copy_(torch.cat([filters, -filters]))

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, patch_size={self.patch_size}"


def fit_to_data(model: nn.Module, images: torch.Tensor) -> None:
    """Fit every :class:`PatchWhitening` in ``model`` to ``images`` (it is a first layer: it sees them as they are)."""
    for layer in model.modules():
        if isinstance(layer, PatchWhitening):
            layer.fit(images)
