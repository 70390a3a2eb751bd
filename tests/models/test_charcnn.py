import pytest
import torch
from torch import nn

from convscope.errors import UserError
from convscope.models import create_model, model_options

SEED_INPUTS = {"vocab_size": 31, "max_len": 22}  # the seed's 31 characters and 22 characters per name


def _model(**options) -> nn.Module:
    torch.manual_seed(0)
    return create_model("char-cnn", num_classes=2, inputs=SEED_INPUTS, **options).eval()


def _tokens(n: int = 4, length: int = 23) -> torch.Tensor:
    return torch.randint(0, 31, (n, length), generator=torch.Generator().manual_seed(1))


def test_seed_parameter_count_and_options() -> None:
    model = _model()
    assert sum(p.numel() for p in model.parameters()) == 19_448  # the seed's torchinfo summary
    assert model_options("char-cnn") == {
        "context": 3,
        "embedding_dim": 10,
        "conv_width": 64,
        "fc_width": 256,
        "dropout": 0.5,
    }


def test_logits_are_the_head_of_pooled_windows() -> None:
    model = _model(context=4, conv_width=128)
    tokens = _tokens()
    windows = model.features.windows(tokens)
    assert windows.shape == (4, 128, 23 - 4 + 1)
    pooled = model.features(tokens)
    torch.testing.assert_close(pooled, windows.amax(dim=2))
    logits = model(tokens)
    assert logits.shape == (4, 2)
    torch.testing.assert_close(logits, model.head(pooled))


def test_convolution_is_the_seeds_one_channel_convolution() -> None:
    """The seed's Conv1d(1, W, context * E, stride=E) over the concatenated embeddings, with the same weights
    laid out differently, gives the same windows."""
    model = _model(context=4, conv_width=8)
    conv, embedding = model.features.conv, model.features.embedding
    seed = nn.Conv1d(1, 8, kernel_size=4 * 10, stride=10)
    with torch.no_grad():
        seed.weight.copy_(conv.weight.permute(0, 2, 1).reshape(8, 1, 40))
        seed.bias.copy_(conv.bias)
    tokens = _tokens()
    expected = torch.relu(seed(embedding(tokens).flatten(1).unsqueeze(1)))
    torch.testing.assert_close(model.features.windows(tokens), expected)


def test_the_last_window_counts() -> None:
    """The seed's MaxPool1d(MAX_LEN - context + 1) left the last window out; here it is pooled like the others."""
    model = _model(context=1, conv_width=2)
    with torch.no_grad():  # channel 0 fires on token 5 only
        model.features.embedding.weight.zero_()
        model.features.embedding.weight[5, 0] = 1.0
        model.features.conv.weight.zero_()
        model.features.conv.weight[0, 0, 0] = 1.0
        model.features.conv.bias.fill_(-0.5)
    tokens = torch.zeros(1, 23, dtype=torch.int64)
    assert model.features(tokens)[0, 0].item() == 0
    tokens[0, -1] = 5
    assert model.features(tokens)[0, 0].item() == pytest.approx(0.5)


def test_every_parameter_learns() -> None:
    model = _model().train()
    model(_tokens()).square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"context": 0}, "context"),
        ({"conv_width": 2.5}, "conv_width"),
        ({"embedding_dim": True}, "embedding_dim"),
        ({"dropout": 1.0}, "dropout"),
        ({"context": 24}, "data.max_len"),
        ({"kernel": 3}, "kernel"),
    ],
)
def test_bad_options_are_named(options: dict, fragment: str) -> None:
    with pytest.raises(UserError, match=fragment):
        create_model("char-cnn", num_classes=2, inputs=SEED_INPUTS, **options)
