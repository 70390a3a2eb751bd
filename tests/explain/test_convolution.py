import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from convscope.explain.convolution import conv_components_figure, convolve, convolve_layer


def test_convolve_is_conv2d_without_padding_or_stride():
    g = torch.Generator().manual_seed(0)
    X, K = torch.randn(7, 9, generator=g), torch.randn(3, 2, generator=g)
    expected = F.conv2d(X[None, None], K[None, None])[0, 0]
    torch.testing.assert_close(convolve(X, K).float(), expected, rtol=1e-5, atol=1e-5)


@settings(max_examples=40, deadline=None)
@given(
    c_in=st.integers(1, 3),
    c_out=st.integers(1, 3),
    height=st.integers(1, 9),
    width=st.integers(1, 9),
    kernel=st.integers(1, 4),
    stride=st.integers(1, 3),
    padding=st.integers(0, 2),
    seed=st.integers(0, 2**16),
)
def test_padding_stride_and_output_size_agree_with_conv2d(c_in, c_out, height, width, kernel, stride, padding, seed):
    if kernel > min(height, width) + 2 * padding:
        return  # the kernel does not fit: Conv2d refuses it too
    torch.manual_seed(seed)
    conv = nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding)
    X = torch.randn(c_in, height, width)
    got = convolve_layer(X, conv.weight.detach(), conv.bias.detach(), stride=stride, padding=padding)
    expected = conv(X[None])[0].detach()
    # The output size of seed 004's remark: floor((w + 2p - k) / s) + 1.
    size = ((height + 2 * padding - kernel) // stride + 1, (width + 2 * padding - kernel) // stride + 1)
    assert got.shape == (c_out, *size) == expected.shape
    torch.testing.assert_close(got.float(), expected, rtol=1e-4, atol=1e-5)


def test_component_figure_sums_components_to_the_layer_output():
    torch.manual_seed(0)
    X = torch.rand(3, 12, 12)
    conv = nn.Conv2d(3, 4, 5)
    fig, outputs = conv_components_figure(X, conv)
    assert len(fig.axes) == (3 + 1) * (4 + 1)
    assert fig.axes[1].get_title() == "X̄(k=0)"
    plt.close(fig)
    torch.testing.assert_close(outputs.float(), conv(X[None])[0].detach(), rtol=1e-5, atol=1e-5)
