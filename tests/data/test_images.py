import io
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from convscope.data import images
from convscope.data.images import decode_image, fit_size, load_images, probe_image
from convscope.errors import UserError

from .helpers import make_image, pixels

# (extension, PIL mode, colour?) for every format and odd mode decode_image must handle.
CASES = [
    ("png", "RGB", True),
    ("png", "L", False),
    ("png", "RGBA", True),
    ("png", "LA", False),
    ("png", "P", True),
    ("png", "1", False),
    ("png", "I;16", False),
    ("jpg", "RGB", True),
    ("jpeg", "L", False),
    ("jpg", "CMYK", True),
    ("bmp", "RGB", True),
    ("bmp", "P", True),
    ("tif", "RGB", True),
    ("tiff", "L", False),
    ("tif", "CMYK", True),
    ("tif", "I;16", False),
    ("webp", "RGB", True),
    ("webp", "RGBA", True),
]


def _chw(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(array).permute(2, 0, 1) if array.ndim == 3 else torch.from_numpy(array)[None]


@pytest.mark.parametrize(("ext", "mode", "colour"), CASES)
def test_every_format_and_mode_decodes_to_uint8_chw(tmp_path: Path, ext: str, mode: str, colour: bool) -> None:
    path = make_image(tmp_path / f"x.{ext}", size=(6, 9), mode=mode)
    assert probe_image(path) == images.ImageInfo(colour=colour, size=(6, 9))
    for channels in (1, 3):
        image = decode_image(path, channels)
        assert image.dtype == torch.uint8 and image.shape == (channels, 6, 9)


@pytest.mark.parametrize("ext", ["png", "bmp", "tif", "webp"])
def test_lossless_rgb_pixels_survive(tmp_path: Path, ext: str) -> None:
    path = make_image(tmp_path / f"x.{ext}", seed=3)
    assert torch.equal(decode_image(path, 3), _chw(pixels(3)))


@pytest.mark.parametrize("ext", ["png", "webp", "tif"])
def test_alpha_is_dropped_not_composited(tmp_path: Path, ext: str) -> None:
    path = make_image(tmp_path / f"x.{ext}", mode="RGBA")
    assert torch.equal(decode_image(path, 3), _chw(pixels(0, channels=4)[..., :3]))


@pytest.mark.parametrize("ext", ["png", "tif"])
def test_sixteen_bit_images_are_scaled_not_clipped(tmp_path: Path, ext: str) -> None:
    path = make_image(tmp_path / f"x.{ext}", mode="I;16")
    assert torch.equal(decode_image(path, 1), _chw(pixels(0, channels=1)))


def test_one_bit_images_are_black_and_white(tmp_path: Path) -> None:
    path = make_image(tmp_path / "x.png", mode="1")
    assert set(decode_image(path, 1).unique().tolist()) <= {0, 255}


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "P", "L", "LA", "1", "I;16"])
def test_torchvision_and_pil_paths_agree(tmp_path: Path, mode: str) -> None:
    # A data set mixes files each decoder handles; a file must not depend on which one read it.
    path = make_image(tmp_path / "x.png", mode=mode)
    for channels in (1, 3) if mode in ("L", "LA", "1", "I;16") else (3,):
        assert torch.equal(decode_image(path, channels), images._decode_pil(path.read_bytes(), channels))


def test_grey_images_repeat_to_three_channels(tmp_path: Path) -> None:
    image = decode_image(make_image(tmp_path / "x.png", mode="L"), 3)
    assert torch.equal(image[0], image[1]) and torch.equal(image[1], image[2])


def _jpeg(tmp_path: Path) -> bytes:
    stream = io.BytesIO()
    Image.fromarray(pixels(0, (32, 32))).save(stream, "JPEG")
    return stream.getvalue()


@pytest.mark.parametrize("cut", [0.5, 0.9])
def test_truncated_jpeg_is_refused_naming_the_file(tmp_path: Path, cut: float) -> None:
    data = _jpeg(tmp_path)
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: int(len(data) * cut)])
    with pytest.raises(UserError, match=r"cut\.jpg"):
        decode_image(path, 3)


def test_truncated_png_and_garbage_are_refused(tmp_path: Path) -> None:
    data = make_image(tmp_path / "ok.png", size=(16, 16)).read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.jpg").write_text("not an image")
    with pytest.raises(UserError, match=r"cut\.png"):
        decode_image(tmp_path / "cut.png", 3)
    with pytest.raises(UserError, match=r"text\.jpg.*not an image"):
        decode_image(tmp_path / "text.jpg", 3)
    with pytest.raises(UserError, match=r"text\.jpg"):
        probe_image(tmp_path / "text.jpg")


def test_no_deprecation_warning_escapes(tmp_path: Path) -> None:
    path = make_image(tmp_path / "x.jpg")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        decode_image(path, 3)
        load_images([path])


def test_fit_size_covers_then_crops_centre() -> None:
    image = torch.arange(4 * 8, dtype=torch.uint8).reshape(1, 4, 8)
    assert fit_size(image, (4, 8)) is image
    assert torch.equal(fit_size(image, (4, 4)), image[:, :, 2:6])  # same height: a centre crop only
    assert fit_size(image, (8, 8)).shape == (1, 8, 8)  # upscaled to cover, then cropped


def test_load_images_picks_channels_and_the_most_common_size(tmp_path: Path) -> None:
    paths = [
        make_image(tmp_path / "a.png", mode="L", size=(8, 8)),
        make_image(tmp_path / "b.png", mode="L", size=(8, 8)),
        make_image(tmp_path / "c.png", mode="L", size=(16, 12)),
    ]
    grey = load_images(paths)
    assert grey.images.shape == (3, 1, 8, 8) and grey.kept == [0, 1, 2] and grey.skipped == []
    colour = load_images([*paths, make_image(tmp_path / "d.jpg")], size=(4, 6))
    assert colour.images.shape == (4, 3, 4, 6)
    assert torch.equal(colour.images[0], fit_size(decode_image(paths[0], 3), (4, 6)))


def test_load_images_skips_bad_files_only_when_asked(tmp_path: Path) -> None:
    good = [make_image(tmp_path / f"{index}.png", seed=index) for index in range(3)]
    bad = tmp_path / "bad.png"
    bad.write_bytes(good[0].read_bytes()[:40])  # passes the header probe, fails decoding
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"junk")  # fails the probe
    paths = [good[0], bad, good[1], junk, good[2]]
    with pytest.raises(UserError, match=r"bad\.png|junk\.jpg"):
        load_images(paths)
    decoded = load_images(paths, skip_bad=True)
    assert decoded.kept == [0, 2, 4] and decoded.skipped == [bad, junk]
    assert torch.equal(decoded.images[1], _chw(pixels(1)))
    with pytest.raises(UserError, match="none of the 2 images"):
        load_images([bad, junk], skip_bad=True)
