"""Images in and out: files, PIL images and tensors, in the library's convention.

The editing API works on float tensors ``(B, 3, H, W)`` in ``[-1, 1]`` (a VAE's range); users have
PNG/JPEG files and PIL images. This module converts between them, with the checks a command line
needs to fail early and clearly:

* :func:`load_image` -- a path, PIL image or tensor to ``(1, 3, H, W)`` in ``[-1, 1]``; a missing
  or unreadable file is an error that names the file.
* :func:`load_mask` -- a grey-level mask (white = editable) at a given size, in ``[0, 1]``.
* :func:`save_image` -- 8-bit file out; refuses to overwrite an existing file unless ``force``
  (an edit can take minutes on a real model: never lose one silently). Writes atomically.
* :func:`check_output` -- the same refusal, done *before* any work starts.
* :func:`check_size` / :func:`resize_to_multiple` -- models need sides that are multiples of 8 or
  16; say which size is nearest, or resize when the user asks for it.

Only torch and Pillow are needed.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = [
    "ImageLike",
    "check_output",
    "check_size",
    "image_size",
    "load_image",
    "load_mask",
    "nearest_multiple",
    "resize_to_multiple",
    "save_image",
    "to_pil",
]

#: What :func:`load_image` accepts.
ImageLike = str | os.PathLike | Image.Image | torch.Tensor


def _open(path: str | os.PathLike, what: str) -> Image.Image:
    """Open an image file fully (decode now, so a truncated file fails here), EXIF rotation applied."""
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"{what} file not found: {str(p)!r}")
    if p.is_dir():
        raise ValueError(f"{what} {str(p)!r} is a directory, not an image file")
    try:
        with Image.open(p) as im:
            im.load()
            return ImageOps.exif_transpose(im)
    except Image.DecompressionBombError as e:
        raise ValueError(_too_large(p, what, e)) from None
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise ValueError(f"cannot read {what} {str(p)!r}: not a readable image ({e})") from None


def _too_large(p: Path, what: str, error: Exception) -> str:
    """The one-line message for an image over Pillow's decompression-bomb limit (``Image.MAX_IMAGE_PIXELS``)."""
    size = re.search(r"\((\d+) pixels\)", str(error))
    pixels = f"{int(size[1]) / 1e6:.0f} Mpixels, " if size else ""
    limit = 2 * (Image.MAX_IMAGE_PIXELS or 0)
    return (
        f"{what} {str(p)!r} is too large to open safely ({pixels}over Pillow's limit of {limit / 1e6:.0f} Mpixels "
        "against decompression bombs); downscale it first"
    )


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """``(height, width)`` of an image file (after EXIF rotation), reading only what is needed."""
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"image file not found: {str(p)!r}")
    try:
        with Image.open(p) as im:
            w, h = im.size
            orientation = im.getexif().get(0x0112, 1)
    except Image.DecompressionBombError as e:
        raise ValueError(_too_large(p, "image", e)) from None
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise ValueError(f"cannot read image {str(p)!r}: not a readable image ({e})") from None
    return (w, h) if orientation in (5, 6, 7, 8) else (h, w)


def _pil_to_tensor(im: Image.Image) -> torch.Tensor:
    """RGB PIL image to ``(1, 3, H, W)`` float32 in [-1, 1]."""
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        # composite transparent pixels on white (what viewers show) instead of dropping alpha to black
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(background, rgba)
    rgb = im.convert("RGB")
    data = torch.frombuffer(bytearray(rgb.tobytes()), dtype=torch.uint8)
    x = data.view(rgb.height, rgb.width, 3).permute(2, 0, 1).unsqueeze(0)
    return x.float() / 127.5 - 1.0


def load_image(image: ImageLike) -> torch.Tensor:
    """An image as a float32 tensor ``(1, 3, H, W)`` in ``[-1, 1]``.

    Accepts a file path (any format Pillow reads; EXIF orientation is applied, transparency is
    composited on white, grey levels become RGB), a PIL image, or a tensor: ``uint8`` ``(3, H, W)``
    / ``(1, 3, H, W)`` in 0..255, or floating point already in ``[-1, 1]`` (a float tensor outside
    that range is rejected: ``[0, 1]`` tensors must be mapped with ``2 x - 1`` first).

    Raises:
        FileNotFoundError: the file does not exist (the message names it).
        ValueError: the file is not a readable image, or the tensor has the wrong shape or range.
    """
    if isinstance(image, Image.Image):
        return _pil_to_tensor(ImageOps.exif_transpose(image))
    if isinstance(image, torch.Tensor):
        return _tensor_image(image)
    if isinstance(image, (str, os.PathLike)):
        return _pil_to_tensor(_open(image, "image"))
    raise TypeError(f"expected an image path, a PIL image or a tensor, got {type(image).__name__}")


def _tensor_image(x: torch.Tensor) -> torch.Tensor:
    if x.dim() == 3:
        x = x.unsqueeze(0)
    if x.dim() != 4 or x.shape[0] != 1 or x.shape[1] != 3:
        raise ValueError(f"an image tensor must have shape (3, H, W) or (1, 3, H, W), got {tuple(x.shape)}")
    if x.dtype == torch.uint8:
        return x.float() / 127.5 - 1.0
    if not x.is_floating_point():
        raise ValueError(f"an image tensor must be uint8 (0..255) or floating point in [-1, 1], got {x.dtype}")
    x = x.detach().float()
    if not torch.isfinite(x).all():
        raise ValueError("the image tensor contains NaN or Inf")
    lo, hi = float(x.min()), float(x.max())
    if lo < -1.0 - 1e-3 or hi > 1.0 + 1e-3:
        raise ValueError(f"a floating-point image tensor must lie in [-1, 1], got values in [{lo:.3g}, {hi:.3g}]")
    return x.clamp(-1.0, 1.0)


def load_mask(
    mask: str | os.PathLike | Image.Image | torch.Tensor,
    size: tuple[int, int],
    *,
    source_size: tuple[int, int] | None = None,
    threshold: float | None = 0.5,
) -> torch.Tensor:
    """A mask as float32 ``(1, 1, *size)`` in ``[0, 1]``; 1 (white) = editable, 0 (black) = keep.

    The mask is read as grey levels (an RGBA mask uses its alpha channel when it has no grey
    content) and resized to ``size = (height, width)`` with box (area) averaging -- the right
    filter to bring a pixel mask down to a latent grid. ``threshold`` then binarises it (``None``
    keeps the soft values). ``source_size`` (the image's ``(height, width)``) makes a mask of
    another size an error instead of silently stretching it.
    """
    if isinstance(mask, torch.Tensor):
        m = mask.detach().float()
        while m.dim() < 4:
            m = m.unsqueeze(0)
        if m.shape[:2] != (1, 1):
            raise ValueError(f"a mask tensor must have shape (H, W), (1, H, W) or (1, 1, H, W), got {tuple(mask.shape)}")
        if mask.dtype == torch.uint8:
            m = m / 255.0
    else:
        im = mask if isinstance(mask, Image.Image) else _open(mask, "mask")
        if im.mode in ("RGBA", "LA") and im.convert("L").getextrema()[0] == im.convert("L").getextrema()[1]:
            im = im.getchannel("A")
        grey = im.convert("L")
        data = torch.frombuffer(bytearray(grey.tobytes()), dtype=torch.uint8).view(1, 1, grey.height, grey.width)
        m = data.float() / 255.0
    if source_size is not None and tuple(m.shape[-2:]) != tuple(source_size):
        raise ValueError(
            f"the mask is {m.shape[-2]}x{m.shape[-1]} (HxW) but the image is {source_size[0]}x{source_size[1]}; "
            "they must have the same size"
        )
    if m.min() < 0 or m.max() > 1:
        raise ValueError("mask values must lie in [0, 1] (or 0..255 for 8-bit masks)")
    if tuple(m.shape[-2:]) != tuple(size):
        m = F.interpolate(m, size=tuple(size), mode="area")
    if threshold is not None:
        m = (m >= threshold).float()
    return m


def nearest_multiple(size: int, multiple: int) -> int:
    """The multiple of ``multiple`` nearest to ``size`` (halves round up), at least ``multiple``."""
    return max(multiple, (size + multiple // 2) // multiple * multiple)


def check_size(
    height: int,
    width: int,
    multiple: int,
    why: str = "this model needs it",
    advice: str = "pass --resize (resize_to_multiple) or crop the image to it",
) -> None:
    """Raise a ``ValueError`` naming the nearest valid size unless both sides are multiples of ``multiple``.

    diffusers pipelines silently resize such images; an editor must not change the user's framing
    without being asked, so this says what to do instead. ``why`` names the model's reason (the
    backbones say which VAE / packing needs it) and ``advice`` what the caller can do.
    """
    if height % multiple == 0 and width % multiple == 0:
        return
    h, w = nearest_multiple(height, multiple), nearest_multiple(width, multiple)
    raise ValueError(
        f"image size {height}x{width} (HxW) is not supported: {why}, so both sides must be multiples of "
        f"{multiple}. The nearest valid size is {h}x{w}; {advice}."
    )


def resize_to_multiple(image: torch.Tensor, multiple: int) -> torch.Tensor:
    """Resize ``(B, 3, H, W)`` images so that both sides are the nearest multiples of ``multiple``.

    Anti-aliased bicubic (PyTorch's port of Pillow's filter), clamped to ``[-1, 1]``. Images that
    already fit are returned unchanged (the same tensor).
    """
    height, width = int(image.shape[-2]), int(image.shape[-1])
    size = (nearest_multiple(height, multiple), nearest_multiple(width, multiple))
    if size == (height, width):
        return image
    out = F.interpolate(image.float(), size=size, mode="bicubic", antialias=True, align_corners=False)
    return out.clamp(-1.0, 1.0)


def to_pil(image: torch.Tensor) -> Image.Image:
    """A ``(3, H, W)`` or ``(1, 3, H, W)`` tensor in ``[-1, 1]`` as an 8-bit RGB PIL image (rounded)."""
    x = image.detach()
    if x.dim() == 4:
        if x.shape[0] != 1:
            raise ValueError(f"expected one image, got a batch of {x.shape[0]}")
        x = x[0]
    if x.dim() != 3 or x.shape[0] != 3:
        raise ValueError(f"an image tensor must have shape (3, H, W) or (1, 3, H, W), got {tuple(image.shape)}")
    x = x.float().cpu()
    if not torch.isfinite(x).all():
        raise ValueError("the image contains NaN or Inf (a diverged edit); nothing was saved")
    data = ((x.clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8).permute(1, 2, 0).contiguous()
    return Image.frombytes("RGB", (data.shape[1], data.shape[0]), data.numpy().tobytes())


def check_output(path: str | os.PathLike, force: bool = False) -> Path:
    """Fail now if ``path`` can't be written: it exists (without ``force``), is a directory, or has an
    unknown image extension. Call it before loading a model."""
    p = Path(path).expanduser()
    if p.is_dir():
        raise ValueError(f"output {str(p)!r} is a directory; give a file name such as {str(p / 'edit.png')!r}")
    _format(p)
    if p.exists() and not force:
        raise FileExistsError(f"output file {str(p)!r} already exists; pass --force (force=True) to overwrite it")
    return p


def _format(p: Path) -> str:
    extensions = Image.registered_extensions()
    fmt = extensions.get(p.suffix.lower())
    if fmt is None or fmt not in Image.SAVE:
        raise ValueError(f"cannot tell the image format of {str(p)!r} from its extension; use .png, .jpg or .webp")
    return fmt


def save_image(image: torch.Tensor | Image.Image, path: str | os.PathLike, force: bool = False) -> Path:
    """Save one image (tensor in ``[-1, 1]`` or PIL) to ``path``, creating parent folders.

    Refuses to overwrite an existing file unless ``force`` (``FileExistsError`` saying to pass
    ``--force``). The file is written to a temporary name and renamed, so an interrupted save never
    leaves a truncated image behind. PNG output is byte-for-byte deterministic.
    """
    p = check_output(path, force)
    pil = image if isinstance(image, Image.Image) else to_pil(image)
    fmt = _format(p)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")  # same folder: the rename is atomic
    try:
        with open(tmp, "wb") as f:
            pil.save(f, format=fmt)
        os.replace(tmp, p)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return p
