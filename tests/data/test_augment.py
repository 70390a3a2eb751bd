import pytest
import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF

from convscope.config import AugmentConfig
from convscope.data.augment import (
    CenterCrop,
    HorizontalFlip,
    Normalize,
    Pipeline,
    RandomCrop,
    Rotation,
    VerticalFlip,
    build_augment,
)
from convscope.errors import UserError


def _batch(n: int = 16, c: int = 3, h: int = 12, w: int = 10) -> torch.Tensor:
    return torch.rand(n, c, h, w, generator=torch.Generator().manual_seed(0))


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize(
    ("op", "reference"), [(HorizontalFlip(), TF.horizontal_flip), (VerticalFlip(), TF.vertical_flip)]
)
def test_flip_flips_exactly_the_chosen_samples(op, reference) -> None:
    x = _batch()
    flipped = op.sample(len(x), _gen())
    assert 0 < flipped.sum() < len(x)  # both kinds present at p=0.5 with this seed
    out = op(x, _gen())
    assert torch.equal(out[flipped], reference(x[flipped]))
    assert torch.equal(out[~flipped], x[~flipped])


@pytest.mark.parametrize("mode", ["reflect", "zeros"])
def test_crop_equals_torchvision_crop_of_the_padded_image(mode: str) -> None:
    x = _batch()
    op = RandomCrop(3, mode=mode)
    offsets = op.sample(len(x), _gen())
    out = op(x, _gen())
    padded = F.pad(x, (3, 3, 3, 3), mode="reflect" if mode == "reflect" else "constant")
    for i, (top, left) in enumerate(offsets.tolist()):
        assert torch.equal(out[i], TF.crop(padded[i], top, left, 12, 10))
    assert offsets.unique(dim=0).shape[0] > 1  # samples get different offsets


@pytest.mark.parametrize("angle", [25.0, -40.0])
def test_rotation_matches_torchvision(angle: float) -> None:
    x = _batch(w=14)  # non-square: the grid must not stretch
    out = Rotation(45).apply(x, torch.full((len(x),), angle))
    expected = TF.rotate(x, angle, interpolation=TF.InterpolationMode.BILINEAR)
    torch.testing.assert_close(out[..., 2:-2, 2:-2], expected[..., 2:-2, 2:-2], atol=1e-5, rtol=0)


def test_rotation_angles_are_per_sample_and_in_range() -> None:
    angles = Rotation(15).sample(1000, _gen())
    assert angles.abs().max() <= 15 and angles.std() > 5


def test_same_seed_same_output_different_seed_different_output() -> None:
    pipe = build_augment(AugmentConfig(crop_padding=2, hflip=True, vflip=True, rotation=10))
    x = _batch()
    assert torch.equal(pipe(x, _gen(1)), pipe(x, _gen(1)))
    assert not torch.equal(pipe(x, _gen(1)), pipe(x, _gen(2)))


def test_identical_samples_get_different_augmentations() -> None:
    x = _batch(n=1).expand(32, -1, -1, -1)
    for op in (RandomCrop(2), HorizontalFlip(), Rotation(30)):
        out = op(x, _gen())
        assert len({tuple(o.flatten()[:50].tolist()) for o in out}) > 1, type(op).__name__


def test_center_crop_and_normalize() -> None:
    x = _batch()
    assert torch.equal(CenterCrop(6)(x), x[..., 3:9, 2:8])
    out = Normalize([0.5, 0.25, 0.0], [0.5, 2.0, 1.0])(x)
    torch.testing.assert_close(out[:, 1], (x[:, 1] - 0.25) / 2.0)


def test_build_augment_order_and_eval_view() -> None:
    cfg = AugmentConfig(crop_padding=4, hflip=True, rotation=5.0, center_crop=8)
    assert [type(op) for op in build_augment(cfg).ops] == [CenterCrop, RandomCrop, HorizontalFlip, Rotation]
    assert [type(op) for op in build_augment(cfg, train=False).ops] == [CenterCrop]
    assert build_augment(AugmentConfig()) is None
    assert isinstance(build_augment(AugmentConfig(vflip=True)), Pipeline)


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: AugmentConfig(crop_padding=-1), "augment.crop_padding"),
        (lambda: AugmentConfig(rotation=200.0), "augment.rotation"),
        (lambda: AugmentConfig(center_crop=-2), "augment.center_crop"),
        (lambda: RandomCrop(2, mode="edge"), "mode"),
        (lambda: HorizontalFlip(p=1.5), "probability"),
        (lambda: Normalize([0.5], [0.0]), "std"),
    ],
)
def test_bad_settings_are_user_errors(make, field: str) -> None:
    with pytest.raises(UserError, match=field):
        make()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_gpu_output_equals_cpu_output() -> None:
    pipe = build_augment(AugmentConfig(crop_padding=2, hflip=True, vflip=True, rotation=10, center_crop=8))
    x = _batch()
    torch.testing.assert_close(pipe(x.cuda(), _gen(3)).cpu(), pipe(x, _gen(3)), atol=1e-5, rtol=0)
