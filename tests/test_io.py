"""Images in and out (coupled_sde.io): conversions, clear errors, no silent overwrites, sizes."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from coupled_sde.io import (
    check_output,
    check_size,
    image_size,
    load_image,
    load_mask,
    nearest_multiple,
    resize_to_multiple,
    save_image,
    to_pil,
)


def _rgb(height: int = 6, width: int = 10) -> Image.Image:
    data = bytes((3 * x + 7 * y + 11 * c) % 256 for y in range(height) for x in range(width) for c in range(3))
    return Image.frombytes("RGB", (width, height), data)


def test_png_round_trip_is_exact(tmp_path):
    src = tmp_path / "in.png"
    _rgb().save(src)
    x = load_image(src)
    assert x.shape == (1, 3, 6, 10) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1
    out = save_image(x, tmp_path / "sub" / "out.png")  # parent folders are created
    assert Image.open(out).tobytes() == _rgb().tobytes()
    assert [p.name for p in out.parent.iterdir()] == ["out.png"]  # no temporary file left behind


def test_pixel_values_map_to_minus_one_one(tmp_path):
    im = Image.new("RGB", (2, 1))
    im.putpixel((0, 0), (0, 255, 0))
    im.putpixel((1, 0), (255, 0, 255))
    x = load_image(im)
    assert torch.equal(x[0, :, 0, 0], torch.tensor([-1.0, 1.0, -1.0]))
    assert torch.equal(x[0, :, 0, 1], torch.tensor([1.0, -1.0, 1.0]))


def test_missing_and_unreadable_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.png"):
        load_image(tmp_path / "nope.png")
    bad = tmp_path / "not_an_image.png"
    bad.write_text("hello")
    with pytest.raises(ValueError, match="not_an_image.png"):
        load_image(bad)
    with pytest.raises(ValueError, match="directory"):
        load_image(tmp_path)
    with pytest.raises(FileNotFoundError, match="nope.png"):
        image_size(tmp_path / "nope.png")


def test_transparency_grey_and_exif_rotation(tmp_path):
    rgba = Image.new("RGBA", (4, 3), (10, 20, 30, 0))  # fully transparent: composited on white
    assert torch.equal(load_image(rgba), torch.ones(1, 3, 3, 4))
    grey = Image.new("L", (4, 3), 0)
    assert load_image(grey).shape == (1, 3, 3, 4)

    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    _rgb(6, 10).save(path, exif=exif)
    assert image_size(path) == (10, 6)
    assert load_image(path).shape == (1, 3, 10, 6)


def test_tensors_are_checked():
    assert torch.equal(load_image(torch.full((3, 2, 2), 255, dtype=torch.uint8)), torch.ones(1, 3, 2, 2))
    x = torch.rand(1, 3, 4, 4) * 2 - 1
    assert torch.equal(load_image(x), x)
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        load_image(torch.rand(1, 3, 4, 4) * 3)
    with pytest.raises(ValueError, match="shape"):
        load_image(torch.zeros(2, 3, 4, 4))
    with pytest.raises(TypeError):
        load_image(42)


def test_save_refuses_to_overwrite_without_force(tmp_path):
    target = tmp_path / "edit.png"
    target.write_bytes(b"precious")
    x = torch.zeros(1, 3, 4, 4)
    with pytest.raises(FileExistsError, match="--force"):
        save_image(x, target)
    with pytest.raises(FileExistsError, match="--force"):
        check_output(target)
    assert target.read_bytes() == b"precious"
    save_image(x, target, force=True)
    assert Image.open(target).size == (4, 4)


def test_save_is_deterministic_and_checks_what_it_writes(tmp_path):
    x = torch.rand(1, 3, 8, 8) * 2 - 1
    a, b = save_image(x, tmp_path / "a.png"), save_image(x[0], tmp_path / "b.png")
    assert a.read_bytes() == b.read_bytes()
    with pytest.raises(ValueError, match="NaN"):
        save_image(torch.full((1, 3, 2, 2), float("nan")), tmp_path / "nan.png")
    assert not (tmp_path / "nan.png").exists()
    with pytest.raises(ValueError, match="extension"):
        save_image(x, tmp_path / "edit.unknown")
    with pytest.raises(ValueError, match="directory"):
        check_output(tmp_path)
    save_image(x, tmp_path / "edit.jpg")  # other formats by extension
    assert to_pil(x).size == (8, 8)


def test_check_size_names_the_nearest_valid_size():
    check_size(64, 48, 16)
    with pytest.raises(ValueError, match="nearest valid size is 48x32"):
        check_size(40, 24, 16)
    with pytest.raises(ValueError, match="--resize"):
        check_size(30, 32, 8)
    assert nearest_multiple(8, 16) == 16 and nearest_multiple(23, 16) == 16 and nearest_multiple(24, 16) == 32


def test_resize_to_multiple():
    x = torch.rand(1, 3, 30, 50) * 2 - 1
    y = resize_to_multiple(x, 16)
    assert y.shape == (1, 3, 32, 48) and y.min() >= -1 and y.max() <= 1
    z = torch.zeros(1, 3, 32, 48)
    assert resize_to_multiple(z, 16) is z


def test_masks(tmp_path):
    m = Image.new("L", (8, 8), 0)
    m.paste(255, (4, 0, 8, 8))  # right half white = editable
    path = tmp_path / "mask.png"
    m.save(path)
    small = load_mask(path, (2, 2))
    assert small.shape == (1, 1, 2, 2) and torch.equal(small, torch.tensor([[[[0.0, 1.0], [0.0, 1.0]]]]))
    soft = load_mask(path, (1, 1), threshold=None)
    assert soft.item() == pytest.approx(0.5)
    with pytest.raises(ValueError, match="same size"):
        load_mask(path, (2, 2), source_size=(8, 16))
    alpha = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    alpha.paste((0, 0, 0, 255), (0, 0, 4, 8))  # opaque left half, no grey content: the alpha is the mask
    assert torch.equal(load_mask(alpha, (1, 2)), torch.tensor([[[[1.0, 0.0]]]]))
    with pytest.raises(FileNotFoundError, match="missing.png"):
        load_mask(tmp_path / "missing.png", (2, 2))
    assert torch.equal(load_mask(torch.ones(4, 4), (2, 2)), torch.ones(1, 1, 2, 2))
