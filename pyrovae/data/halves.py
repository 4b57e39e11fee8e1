"""
``mnist-halves``: MNIST split into the top half of each digit (the input ``x``) and its
bottom half (the output ``y``), the image-completion task of Sohn, Lee, Yan (2015) [1].

Each split is ``{"x": top, "y": bottom}``, two float32 ``(N, 392)`` tensors: rows 0-13 and
rows 14-27 of the 28x28 image, flattened. Binarization is MNIST's, applied to the whole image
before it is cut, so ``x`` and ``y`` are one draw of one digit: ``"dynamic"`` (the default)
redraws both halves of every training batch together [2] (:meth:`HalvesDataSet.transform`),
and draws valid and test once (seed 0; the test images are bit for bit those of
``load_dataset("mnist")``); ``"static"`` draws every split once; ``"none"`` keeps grey levels.
The valid split is the last 10,000 training images (a fifth of a training file of at most
20,000 images, so small test files work too). :meth:`HalvesDataSet.dims` gives
``{"x_dim": 392, "y_dim": 392}``, the sizes of a conditional pair (models/cvae.py).

    pyrovae fit --model cvae --guide cvae --data mnist-halves

References:

[1] Sohn, Lee, Yan. Learning Structured Output Representation using Deep Conditional
    Generative Models. NeurIPS 2015.

[2] Burda, Grosse, Salakhutdinov. Importance Weighted Autoencoders. arXiv:1509.00519
"""

from __future__ import annotations

import dataclasses

import torch

from pyrovae.data.datasets import DataSet, _binarize_splits, load_dataset, register_dataset

__all__ = ["HalvesDataSet", "split_halves", "join_halves"]

HEIGHT, WIDTH = 28, 28
CUT = 14  # image rows above the cut are x, the rest y


def split_halves(images: torch.Tensor, cut: int = CUT, width: int = WIDTH) -> tuple[torch.Tensor, torch.Tensor]:
    """``(top, bottom)`` of flattened ``(N, H * W)`` images: rows ``< cut`` and rows ``>= cut``."""
    return images[:, :cut * width], images[:, cut * width:]


def join_halves(top: torch.Tensor, bottom: torch.Tensor) -> torch.Tensor:
    """The flattened whole images ``(..., H * W)`` of their halves (inverse of :func:`split_halves`)."""
    return torch.cat([top, bottom.to(top.dtype)], -1)


@dataclasses.dataclass
class HalvesDataSet(DataSet):
    """A :class:`~pyrovae.data.datasets.DataSet` whose splits are ``{"x": top, "y": bottom}``;
    ``image_shape`` is one half's, ``(14, 28)``, and ``y_dim`` the bottom half's size."""

    y_dim: int = 0

    def __post_init__(self):
        super().__post_init__()
        for split_name in ("train", "valid", "test"):
            split = getattr(self, split_name)
            if "y" not in split or split["y"].shape != (len(split["x"]), self.y_dim):
                raise ValueError(f"{self.name} {split_name}: needs y of shape (N, {self.y_dim})")

    def dims(self) -> dict:
        """``{"x_dim": size of x, "y_dim": size of y}``: the sizes of a conditional pair."""
        return {"x_dim": self.x_dim, "y_dim": self.y_dim}

    def transform(self, batch: dict, generator: torch.Generator | None = None) -> dict:
        """For ``binarize="dynamic"``: ``x`` and ``y`` each redrawn as Bernoulli of their grey
        levels (independent pixels, so this is one draw of the whole image); otherwise ``batch``."""
        if self.binarize != "dynamic":
            return batch
        out = dict(batch)
        for key in ("x", "y"):
            v = batch[key]
            u = torch.rand(v.shape, generator=generator, device=v.device, dtype=v.dtype)
            out[key] = (u < v).to(v.dtype)
        return out


@register_dataset("mnist-halves")
def load_mnist_halves(data_dir, binarize, valid_size) -> HalvesDataSet:
    """MNIST digits cut in two: x the top 14 rows, y the bottom 14 (Sohn et al. 2015)."""
    whole = load_dataset("mnist", data_dir=data_dir, binarize="none", valid_size=0)  # grey, all training rows
    if tuple(whole.image_shape) != (HEIGHT, WIDTH):
        raise ValueError(f"mnist-halves needs 28x28 images, the files have {whole.image_shape}")
    train_x, test_x = whole.train["x"], whole.test["x"]
    num_train = len(train_x)
    if valid_size is None:
        valid_size = 10000 if num_train > 20000 else num_train // 5
    cut = num_train - valid_size
    if cut <= 0:
        raise ValueError(f"valid_size={valid_size} leaves no training rows of mnist's {num_train}")
    binarize = binarize or "dynamic"
    train, valid, test = {"x": train_x[:cut]}, {"x": train_x[cut:]}, {"x": test_x}
    _binarize_splits(train, valid, test, binarize)  # the whole image, as mnist binarizes it
    splits = []
    for split in (train, valid, test):
        top, bottom = split_halves(split["x"])
        splits.append({"x": top.contiguous(), "y": bottom.contiguous()})
    return HalvesDataSet("mnist-halves", *splits, image_shape=(CUT, WIDTH), binarize=binarize,
                         y_dim=(HEIGHT - CUT) * WIDTH)
