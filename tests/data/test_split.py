import pytest
import torch

from convscope.data.split import channel_stats, train_valid_split
from convscope.errors import UserError


def _labels() -> torch.Tensor:
    # Unbalanced classes: 100, 40 and 10 samples, interleaved.
    return torch.cat([torch.zeros(100), torch.ones(40), torch.full((10,), 2)]).long()[torch.randperm(150)]


def test_split_is_a_deterministic_partition() -> None:
    labels = _labels()
    train, valid = train_valid_split(labels, 0.2, seed=1)
    again = train_valid_split(labels, 0.2, seed=1)
    assert torch.equal(train, again[0]) and torch.equal(valid, again[1])
    assert torch.equal(torch.cat([train, valid]).sort().values, torch.arange(150))
    other = train_valid_split(labels, 0.2, seed=2)[1]
    assert not torch.equal(valid, other)


def test_split_is_stratified() -> None:
    labels = _labels()
    _, valid = train_valid_split(labels, 0.2, seed=0)
    assert torch.bincount(labels[valid]).tolist() == [20, 8, 2]


def test_split_keeps_one_training_sample_per_class() -> None:
    labels = torch.tensor([0, 0, 0, 1])
    train, _ = train_valid_split(labels, 0.9, seed=0)
    assert set(labels[train].tolist()) == {0, 1}


def test_zero_fraction_gives_empty_valid() -> None:
    train, valid = train_valid_split(_labels(), 0.0, seed=0)
    assert torch.equal(train, torch.arange(150)) and valid.numel() == 0


@pytest.mark.parametrize("fraction", [-0.1, 1.0, 1.5])
def test_bad_fraction_is_a_user_error(fraction: float) -> None:
    with pytest.raises(UserError, match="test_fraction"):
        train_valid_split(_labels(), fraction, seed=0, field="test_fraction")


def test_channel_stats_match_float64_and_work_on_memory_maps(tmp_path) -> None:
    # 3000 3x32x32 images span several chunks; read them back memory-mapped like the cache does.
    images = torch.randint(0, 256, (3000, 3, 32, 32), dtype=torch.uint8)
    images[:, 1] //= 2
    path = tmp_path / "images.u8"
    images.numpy().tofile(path)
    mapped = torch.from_file(str(path), shared=False, size=images.numel(), dtype=torch.uint8).view(images.shape)
    mean, std = channel_stats(mapped)
    x = images.double() / 255
    assert mean == pytest.approx(x.mean(dim=(0, 2, 3)).tolist(), abs=1e-12)
    assert std == pytest.approx(x.std(dim=(0, 2, 3), correction=0).tolist(), abs=1e-12)
    assert mean[1] < mean[0]
