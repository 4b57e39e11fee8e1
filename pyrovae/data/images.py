"""
A folder of images (PNG or JPEG, read with Pillow) as Datasets.

Each image becomes ``x``: float32 values in :math:`[0, 1]`, flattened from ``(H, W)`` (grey)
or ``(3, H, W)`` (colour, channels first) to width ``C * H * W``. With ``image_size`` every
image is resized so that it covers ``(H, W)`` (keeping its aspect ratio) and center-cropped to
it; without, every image must already have one size. ``color=None`` reads grey if every
image is grey (Pillow modes ``1``, ``L``, ``LA``, ``I``, ``I;16``, ``F``) and RGB otherwise.
Sub-folders holding images are classes: their sorted names give the labels ``y`` (int64).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from pyrovae.data.sources import DataError

__all__ = ["IMAGE_SUFFIXES", "ImageFolderDataset", "scan_images", "image_mode", "read_image"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_GREY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"}
COLOR_CHOICES = {None: None, "auto": None, "grey": "L", "gray": "L", "rgb": "RGB", "color": "RGB", "colour": "RGB"}


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def scan_images(folder: Path) -> tuple[list[Path], list[int] | None, list[str] | None]:
    """
    The images of ``folder``, sorted: directly in it, or one level down in class sub-folders.

    :returns: ``(files, labels, classes)``; ``labels`` and ``classes`` are ``None`` without
        class sub-folders.
    :raises DataError: for an empty folder, no images, or images beside class folders.
    """
    entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    if not entries:
        raise DataError(f"{folder}: the folder is empty; put PNG or JPEG images in it (or in one sub-folder "
                        f"per class)")
    loose = [p for p in entries if _is_image(p)]
    class_dirs = [p for p in entries if p.is_dir() and any(_is_image(q) for q in p.iterdir())]
    if class_dirs and loose:
        raise DataError(f"{loose[0]}: an image beside the class folders {[d.name for d in class_dirs][:3]}; put "
                        f"every image in a class folder, or none")
    if class_dirs:
        classes = [d.name for d in class_dirs]
        files, labels = [], []
        for label, class_dir in enumerate(class_dirs):
            images = sorted(p for p in class_dir.iterdir() if _is_image(p))
            files += images
            labels += [label] * len(images)
        return files, labels, classes
    if not loose:
        names = ", ".join(p.name for p in entries[:3]) + (", ..." if len(entries) > 3 else "")
        raise DataError(f"{folder}: no images found (.png, .jpg, .jpeg) in it or in its sub-folders; it holds "
                        f"{names}")
    return loose, None, None


def _open(path: Path):
    from PIL import Image, UnidentifiedImageError

    try:
        return Image.open(path)
    except (UnidentifiedImageError, OSError) as error:
        raise DataError(f"{path}: cannot be read as an image ({error}); remove or replace it") from error


def image_mode(files: list[Path], image_size, color) -> tuple[str, tuple[int, int]]:
    """The Pillow mode (``"L"`` or ``"RGB"``) and ``(H, W)`` of a folder's images, from their
    headers only; mixed sizes without ``image_size`` raise a :class:`DataError` naming two files."""
    if color not in COLOR_CHOICES:
        raise ValueError(f"unknown color={color!r}; choose one of {[c for c in COLOR_CHOICES if c]} or None")
    mode, first_size, all_grey = COLOR_CHOICES[color], None, True
    for path in files:
        with _open(path) as image:
            size, grey = image.size, image.mode in _GREY_MODES
        all_grey = all_grey and grey
        if first_size is None:
            first_size, first_path = size, path
        elif image_size is None and size != first_size:
            raise DataError(f"{path} is {size[0]}x{size[1]} but {first_path} is {first_size[0]}x{first_size[1]} "
                            f"(width x height); pass --image-size (image_size=) to resize them to one size")
    if image_size is None:
        shape = (first_size[1], first_size[0])
    else:
        shape = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        if len(shape) != 2 or any(type(s) is not int or s < 1 for s in shape):
            raise ValueError(f"image_size must be a positive int or (height, width), got {image_size!r}")
    return mode or ("L" if all_grey else "RGB"), shape


def read_image(path: Path, mode: str, shape: tuple[int, int], resize: bool) -> np.ndarray:
    """One image as a ``(H, W)`` or ``(3, H, W)`` float32 array in [0, 1]."""
    from PIL import Image

    with _open(path) as image:
        try:
            image = image.convert(mode)
            if resize:
                height, width = shape
                scale = max(height / image.height, width / image.width)  # cover (H, W), then crop
                new = (max(width, round(image.width * scale)), max(height, round(image.height * scale)))
                image = image.resize(new, Image.Resampling.BILINEAR)
                left, top = (new[0] - width) // 2, (new[1] - height) // 2
                image = image.crop((left, top, left + width, top + height))
            pixels = np.asarray(image, dtype=np.uint8)
        except (OSError, ValueError, SyntaxError) as error:
            raise DataError(f"{path}: cannot be read as an image ({error}); remove or replace it") from error
    if pixels.shape[:2] != tuple(shape):
        raise DataError(f"{path} is {pixels.shape[1]}x{pixels.shape[0]}, not {shape[1]}x{shape[0]}; pass "
                        f"--image-size (image_size=) to resize the images to one size")
    if mode == "RGB":
        pixels = pixels.transpose(2, 0, 1)  # (3, H, W)
    return pixels.astype(np.float32) / 255.0


class ImageFolderDataset(Dataset):
    """
    Images as items ``{"x": (C*H*W,) float32, "y": () int64}`` (``y`` with class folders).

    :param list files: the image paths.
    :param list labels: one int per file, or ``None``.
    :param list classes: the class names, in label order.
    :param str mode: ``"L"`` or ``"RGB"``.
    :param tuple shape: ``(H, W)``.
    :param bool resize: resize and center-crop to ``shape``.
    """

    def __init__(self, files, labels, classes, mode, shape, resize):
        self.files, self.labels, self.classes = list(files), labels, classes
        self.mode, self.shape, self.resize = mode, tuple(shape), resize
        self.image_shape = self.shape if mode == "L" else (3,) + self.shape
        self.num_classes = len(classes) if classes is not None else None

    @property
    def x_dim(self) -> int:
        return math.prod(self.image_shape)

    def __len__(self):
        return len(self.files)

    def __getitem__(self, index):
        pixels = read_image(self.files[index], self.mode, self.shape, self.resize)
        item = {"x": torch.from_numpy(pixels.reshape(-1))}
        if self.labels is not None:
            item["y"] = torch.tensor(self.labels[index], dtype=torch.int64)
        return item
