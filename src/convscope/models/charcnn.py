"""Seed 004's character CNN: which n-grams a short text contains decides its class, wherever they are."""

from __future__ import annotations

import torch
from torch import nn

from convscope.errors import UserError
from convscope.models.layers import ConvNet


class CharWindows(nn.Module):
    """Character embedding, one convolution over windows of ``context`` characters, ReLU, max over time.

    The seed lays a text's embeddings end to end in one channel and convolves with a kernel of
    ``context * embedding_dim`` at a stride of ``embedding_dim``. This convolution, with the embedding as
    channels and a kernel of ``context``, is the same map (``weight[c, e, k]`` is the seed's
    ``weight[c, 0, k * embedding_dim + e]``, the same parameters) and trains 2-3 times faster on a CPU.
    ``windows`` gives the activations per window (N x conv_width x windows), what explanations read;
    ``forward`` keeps each channel's strongest window (N x conv_width).
    """

    def __init__(self, vocab_size: int, context: int, embedding_dim: int, conv_width: int) -> None:
        super().__init__()
        self.context = context
        self.embedding = nn.Embedding(vocab_size, embedding_dim)
        self.conv = nn.Conv1d(embedding_dim, conv_width, kernel_size=context)
        self.relu = nn.ReLU()

    def windows(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.relu(self._convolve(tokens))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        # ReLU after the max rather than before: the same values and gradients (ReLU is monotonic), on a
        # tensor `windows` times smaller. The seed's MaxPool1d(MAX_LEN - context + 1) leaves the last window
        # out; the max over all keeps it.
        return self.relu(self._convolve(tokens).amax(dim=2))

    def _convolve(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.conv(self.embedding(tokens).transpose(1, 2))  # N x embedding_dim x L -> N x conv_width x windows


def char_cnn(
    num_classes: int,
    vocab_size: int,
    max_len: int,
    *,
    context: int = 3,
    embedding_dim: int = 10,
    conv_width: int = 64,
    fc_width: int = 256,
    dropout: float = 0.5,
) -> ConvNet:
    """Seed 004's CNNModel for texts of ``max_len`` characters after a start token (19,448 parameters with
    the seed's 31 characters and 2 classes). Input: N x (max_len + 1) token indices; output: class logits."""
    for option, value in (("context", context), ("embedding_dim", embedding_dim), ("conv_width", conv_width),
                          ("fc_width", fc_width)):  # fmt: skip
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UserError(f"model 'char-cnn' option {option} = {value!r}: expected a positive integer")
    if context > max_len + 1:
        raise UserError(
            f"model 'char-cnn' option context = {context} is longer than a text ({max_len} characters and a start "
            "token); lower it or raise data.max_len"
        )
    if not 0 <= dropout < 1:
        raise UserError(f"model 'char-cnn' option dropout = {dropout!r}: expected a number in [0, 1)")
    features = CharWindows(vocab_size, context, embedding_dim, conv_width)
    head = nn.Sequential(
        nn.Linear(conv_width, fc_width),
        nn.ReLU(),
        nn.Dropout(dropout),
        nn.Linear(fc_width, num_classes),
    )
    return ConvNet(features, head)
