"""Image files for image bundles, without torch: PNG/JPEG/BMP/PGM files (or a folder of them, or PIL images)
→ the bundle's input contract.

Each image is converted as the training loader did (``L`` for 1-channel bundles, ``RGB`` for 3-channel ones),
resized to the bundle's height and width with Pillow's default filter, and its 0–255 pixels are scaled to
[0, 1], the range the model was trained on (bundles made from integer pixels record a ``pixel_scale``).
Pillow is optional (``pip install 'slimtune[data]'``) and imported only here.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from slimtune.errors import DataError, missing_dependency

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".pgm")


def is_pil_image(obj: Any) -> bool:
    return all(hasattr(obj, attr) for attr in ("convert", "resize", "mode", "size"))


def image_files(path: str | os.PathLike[str]) -> list[Path]:
    """``path`` itself if it is an image file, else the image files under the folder ``path`` (its subfolders
    too, sorted; hidden ones skipped)."""
    p = Path(path)
    if p.is_dir():
        found = sorted(
            f
            for f in p.rglob("*")
            if f.is_file()
            and f.suffix.lower() in IMAGE_SUFFIXES
            and not any(part.startswith(".") for part in f.relative_to(p).parts)
        )
        if not found:
            raise DataError(f"folder '{p}' has no image files ({', '.join(IMAGE_SUFFIXES)}); put the images in it")
        return found
    if not p.is_file():
        raise DataError(f"image file not found: {p}")
    if p.suffix.lower() not in IMAGE_SUFFIXES:
        raise DataError(f"'{p.name}' is not an image file; use {', '.join(IMAGE_SUFFIXES)}")
    return [p]


def open_images(files: Sequence[Path]) -> list[Any]:
    """PIL images of ``files``, fully read; a file Pillow cannot decode is one ``DataError``."""
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError as exc:
        raise missing_dependency("pillow", "data") from exc
    images = []
    for f in files:
        try:
            with Image.open(f) as im:
                im.load()
                images.append(im.copy())
        except (OSError, UnidentifiedImageError, ValueError) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise DataError(f"cannot read image '{f}' ({reason}); replace it with a valid PNG/JPEG") from None
    return images


def images_to_array(images: Sequence[Any], input_spec: dict[str, Any]) -> np.ndarray:
    """(N, C, H, W) float32 in [0, 1] from PIL images, per the bundle's input ``shape`` and scaling."""
    shape = tuple(int(s) for s in input_spec.get("shape", ()))
    if len(shape) != 3 or shape[0] not in (1, 3):
        raise DataError(f"this bundle's input {shape} is not a 1- or 3-channel image; pass a numpy array instead")
    if "pixel_scale" not in input_spec:
        raise DataError(
            "this bundle does not record how its training pixels were scaled (no pixel_scale in bundle.json); "
            "pass preprocessed arrays (.npy) instead of image files"
        )
    c, h, w = shape
    mode = "L" if c == 1 else "RGB"
    arrays = [np.asarray(im.convert(mode).resize((w, h)), dtype=np.uint8) for im in images]
    x = np.stack(arrays)
    x = x[:, None] if c == 1 else x.transpose(0, 3, 1, 2)
    return (x.astype(np.float32) / np.float32(255.0)).astype(np.float32)
