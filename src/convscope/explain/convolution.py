"""Convolution from scratch (seed 004): the plain loop that ``nn.Conv2d`` computes, and the figure of its
per-channel components. A reference to check against, not something to train with."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no screen here or on most servers; must precede pyplot
import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from torch import nn

from convscope.errors import UserError

_INPUT_CMAPS = ["Reds", "Greens", "Blues"]
_OUTPUT_CMAPS = ["spring", "summer", "autumn", "winter"]


def convolve(X: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """Seed 004: slide the h x w kernel ``K`` over the 2-D ``X`` without padding, stride 1, summing the products.

    This is cross-correlation (the kernel is not flipped), which is what deep-learning layers call convolution.
    """
    h, w = K.shape
    H1, W1 = X.shape[0] - h + 1, X.shape[1] - w + 1
    S = torch.zeros(H1, W1, dtype=torch.float64)
    for i in range(H1):
        for j in range(W1):
            S[i, j] = (X[i : i + h, j : j + w].double() * K.double()).sum()
    return S


def convolve_layer(
    X: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, stride: int = 1, padding: int = 0
) -> torch.Tensor:
    """What ``nn.Conv2d`` computes for one C_in x H x W input, from :func:`convolve`: zero-pad, convolve each
    input channel with its kernel, sum over input channels, add the bias, keep every ``stride``-th position.

    The output is C_out x floor((H + 2p - k) / s) + 1 x floor((W + 2p - k) / s) + 1.
    """
    padded = F.pad(X, (padding, padding, padding, padding))
    maps = []
    for k in range(weight.shape[0]):
        out = sum(convolve(padded[c], weight[k, c]) for c in range(weight.shape[1]))
        if bias is not None:
            out = out + bias[k].double()
        maps.append(out[::stride, ::stride])
    return torch.stack(maps)


@torch.no_grad()
def conv_components_figure(X: torch.Tensor, conv: nn.Conv2d) -> tuple[plt.Figure, torch.Tensor]:
    """Seed 004's figure for a 3-channel image ``X`` (3 x H x W in [0, 1]) and a layer with up to 4 outputs:
    the image, each input channel, each channel convolved with each kernel, and each output map (their sum
    plus the bias) on the top row. Returns the figure and the output maps (C_out x H' x W')."""
    c_in, c_out = X.shape[0], conv.out_channels
    if c_in > len(_INPUT_CMAPS) or c_out > len(_OUTPUT_CMAPS):
        raise ValueError(f"the figure shows up to 3 input and 4 output channels, not {c_in} and {c_out}")
    K, u = conv.weight, conv.bias
    fig, ax = plt.subplots(c_in + 1, c_out + 1, figsize=(2.4 * (c_out + 1), 2.4 * (c_in + 1)))
    ax[0, 0].imshow(X.permute(1, 2, 0).numpy())
    ax[0, 0].set_title("X")
    components = {}
    for c in range(c_in):
        ax[c + 1, 0].imshow(X[c].numpy(), cmap=_INPUT_CMAPS[c])
        ax[c + 1, 0].set_title(f"X(c={c})")
        for k in range(c_out):
            components[c, k] = convolve(X[c], K[k, c])
            ax[c + 1, k + 1].imshow(components[c, k].numpy())
            ax[c + 1, k + 1].set_title(f"X(c={c}) ⊛ K(c={c}, k={k})", fontsize=8)
    outputs = []
    for k in range(c_out):
        out = sum(components[c, k] for c in range(c_in)) + (u[k].double() if u is not None else 0.0)
        outputs.append(out)
        ax[0, k + 1].imshow(out.numpy(), cmap=_OUTPUT_CMAPS[k])
        ax[0, k + 1].set_title(f"X̄(k={k})")
    for a in ax.flat:
        a.axis("off")
    fig.tight_layout()
    return fig, torch.stack(outputs)


@torch.no_grad()
def convolution_check(figure: Path | None = None, seed: int = 0) -> dict:
    """Seed 004's check on its kind of input: a cat photo (scikit-image's ``chelsea``) at 128 x 128 through a
    randomly initialised ``nn.Conv2d(3, 4, 5)``, from scratch and by PyTorch; then the same with stride 2 and
    padding 2. Draws the component figure into ``figure`` when given."""
    try:
        from skimage import data
    except ImportError:
        raise UserError("the convolution check uses scikit-image's photos: pip install scikit-image") from None
    photo = torch.from_numpy(data.chelsea()).permute(2, 0, 1).float().div(255)
    X = F.interpolate(photo[None], size=(128, 128), mode="bilinear", antialias=True)[0].clamp(0, 1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        conv = nn.Conv2d(3, 4, 5)
    fig, scratch = conv_components_figure(X, conv)
    if figure is not None:
        figure.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(figure, dpi=90)
    plt.close(fig)
    torch_out = conv(X[None])[0].double()
    strided = convolve_layer(X, conv.weight, conv.bias, stride=2, padding=2)
    strided_torch = F.conv2d(X[None], conv.weight, conv.bias, stride=2, padding=2)[0].double()
    return {
        "input": "scikit-image chelsea (a cat photo) resized to 3 x 128 x 128, values in [0, 1]",
        "layer": f"nn.Conv2d(3, 4, 5), initialised with seed {seed}",
        "output_shape": list(scratch.shape),
        "mean_abs_difference": (scratch - torch_out).abs().mean().item(),
        "stride2_padding2_output_shape": list(strided.shape),
        "stride2_padding2_mean_abs_difference": (strided - strided_torch).abs().mean().item(),
        "figure": str(figure) if figure is not None else None,
    }
