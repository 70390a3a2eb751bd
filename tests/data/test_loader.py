import pytest
import torch

from convscope.config import AugmentConfig
from convscope.data.augment import build_augment
from convscope.data.base import ImageSet
from convscope.data.loader import TensorLoader
from convscope.errors import UserError


def _data(n: int = 10, c: int = 3) -> ImageSet:
    # Labels are the sample indices, so batches say which samples they hold.
    images = torch.randint(0, 256, (n, c, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    return ImageSet(images, torch.arange(n), [str(i) for i in range(n)])


def _loader(data: ImageSet | None = None, batch_size: int = 4, **kwargs) -> TensorLoader:
    data = data or _data()
    kwargs.setdefault("shuffle", True)
    return TensorLoader(data, batch_size, mean=[0.5] * data.channels, std=[0.25] * data.channels, **kwargs)


def _augment():
    return build_augment(AugmentConfig(crop_padding=2, hflip=True, rotation=10))


def _seen(loader: TensorLoader) -> list[int]:
    return [i for _, y in loader for i in y.tolist()]


def test_every_sample_once_per_epoch_with_partial_last_batch() -> None:
    loader = _loader()
    batches = list(loader)
    assert len(loader) == 3 and [len(y) for _, y in batches] == [4, 4, 2]
    assert sorted(_seen(loader)) == list(range(10))
    x, y = batches[0]
    assert x.dtype == torch.float32 and x.shape == (4, 3, 8, 8) and y.dtype == torch.int64


def test_drop_last() -> None:
    loader = _loader(drop_last=True)
    assert len(loader) == 2 and [len(y) for _, y in loader] == [4, 4]


def test_order_is_a_function_of_seed_and_epoch() -> None:
    a, b = _loader(seed=3), _loader(seed=3)
    assert _seen(a) == _seen(b)
    first = _seen(a)
    a.set_epoch(1)
    assert _seen(a) != first
    assert _seen(_loader(seed=4)) != first


def test_resume_sees_the_tail_of_an_uninterrupted_epoch() -> None:
    full = _loader(augment=_augment(), seed=7)
    full.set_epoch(2)
    expected = list(full)
    resumed = _loader(augment=_augment(), seed=7)
    resumed.set_epoch(2, start_batch=1)
    got = list(resumed)
    assert len(got) == len(expected) - 1
    for (x, y), (ex, ey) in zip(got, expected[1:], strict=True):
        assert torch.equal(x, ex) and torch.equal(y, ey)


def test_augmentation_changes_between_epochs() -> None:
    loader = _loader(augment=_augment(), shuffle=True)
    first = {int(i): x for xb, yb in loader for i, x in zip(yb, xb, strict=True)}
    loader.set_epoch(1)
    second = {int(i): x for xb, yb in loader for i, x in zip(yb, xb, strict=True)}
    assert any(not torch.equal(first[i], second[i]) for i in range(10))


def test_evaluation_order_and_normalisation() -> None:
    data = _data()
    loader = _loader(data, shuffle=False, channels_last=True)
    assert _seen(loader) == list(range(10))
    x = torch.cat([x for x, _ in loader])
    assert x.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(x * 0.25 + 0.5, data.images.float() / 255)


@pytest.mark.parametrize("shuffle", [True, False])
def test_ranks_partition_the_epoch(shuffle: bool) -> None:
    ranks = [_loader(_data(12), batch_size=2, shuffle=shuffle, rank=r, world_size=3) for r in range(3)]
    seen = [_seen(loader) for loader in ranks]
    assert all(len(loader) == 2 and loader.num_samples == 4 for loader in ranks)
    assert sorted(i for s in seen for i in s) == list(range(12))


def test_ranks_pad_to_equal_length() -> None:
    ranks = [_loader(_data(10), batch_size=4, rank=r, world_size=3) for r in range(3)]
    seen = [_seen(loader) for loader in ranks]
    assert [len(s) for s in seen] == [4, 4, 4]
    assert {i for s in seen for i in s} == set(range(10))


def test_bad_settings() -> None:
    with pytest.raises(UserError, match="batch_size"):
        _loader(batch_size=0)
    with pytest.raises(UserError, match="mean"):
        TensorLoader(_data(), 4, shuffle=False, mean=[0.5], std=[0.5])
    with pytest.raises(ValueError, match="batch 9"):
        _loader().set_epoch(0, start_batch=9)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_gpu_batches_equal_cpu_batches() -> None:
    cpu = list(_loader(augment=_augment()))
    gpu = list(_loader(augment=_augment(), device="cuda"))
    for (x, y), (gx, gy) in zip(cpu, gpu, strict=True):
        assert gx.device.type == "cuda" and torch.equal(gy.cpu(), y)
        torch.testing.assert_close(gx.cpu(), x, atol=1e-4, rtol=0)


def test_spread_takes_samples_evenly_from_first_to_last() -> None:
    loader = _loader(_data(n=10), shuffle=False)
    assert loader.spread(4)[1].tolist() == [0, 3, 6, 9]  # labels are the sample indices
    assert loader.spread(50)[1].tolist() == list(range(10))  # never more than the data holds


def _mirrored(loader: TensorLoader, data: ImageSet, epoch: int) -> dict[int, bool]:
    """Per sample of the epoch, whether the loader served it mirrored (no other augmentation)."""
    loader.set_epoch(epoch)
    normalize = TensorLoader(data, 1, shuffle=False, mean=[0.5] * data.channels, std=[0.25] * data.channels).normalize
    out = {}
    for x, y in loader:
        plain = normalize(data.images[y].float() / 255)
        for i, served, original in zip(y.tolist(), x, plain, strict=True):
            assert torch.equal(served, original) or torch.equal(served, original.flip(-1))
            out[i] = not torch.equal(served, original)
    return out


def test_alternating_flip_mirrors_each_image_in_every_other_epoch() -> None:
    data = _data(n=200)
    loader = _loader(data, batch_size=32, alternate_flip=True, seed=5)
    epochs = [_mirrored(loader, data, epoch) for epoch in range(4)]
    assert all(len(seen) == 200 for seen in epochs)
    assert all(epochs[0][i] != epochs[1][i] for i in range(200))  # each image both ways over two epochs
    assert epochs[0] == epochs[2] and epochs[1] == epochs[3]
    assert 60 < sum(epochs[0].values()) < 140  # a random half, not all or none
    other_seed = _mirrored(_loader(data, batch_size=32, alternate_flip=True, seed=6), data, 0)
    assert other_seed != epochs[0]


def test_alternating_flip_comes_from_the_recipe_and_only_where_a_loader_does_it() -> None:
    from convscope.data.modalities.image import make_loader

    data = _data(n=40)
    cfg = AugmentConfig(hflip=True, hflip_mode="alternate")
    loader = make_loader(data, 8, mean=[0.5] * 3, std=[0.25] * 3, device=torch.device("cpu"), train=True,
                         augment=cfg)  # fmt: skip
    assert loader.flipped_in_even_epochs is not None and loader.augment is None
    first, second = _mirrored(loader, data, 0), _mirrored(loader, data, 1)
    assert all(first[i] != second[i] for i in range(40))
    evaluation = make_loader(data, 8, mean=[0.5] * 3, std=[0.25] * 3, device=torch.device("cpu"), augment=cfg)
    assert evaluation.flipped_in_even_epochs is None
    with pytest.raises(UserError, match=r"augment.hflip_mode = 'alternate' is done by image classification's loader"):
        build_augment(cfg)
    with pytest.raises(UserError, match=r"augment.hflip_mode = 'sometimes': expected one of random, alternate"):
        AugmentConfig(hflip=True, hflip_mode="sometimes")
