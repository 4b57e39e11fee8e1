"""
``digit-sequences``: sequences of 8x8 digit images whose classes follow a Markov chain, several
frames per class: data whose units are known, for unit discovery (the HMM-VAE, models/hmm_vae.py).

A sequence is drawn as follows (all from one seed, so the data set is the same on every machine):

1. a number of segments ``S ~ U{min_segments..max_segments}``;
2. the segments' classes ``c_1 ~ U{0..9}``, ``c_j | c_{j-1} ~ Cat(P_{c_{j-1}})``, where the fixed
   transition matrix ``P`` (:func:`unit_chain`) gives each class three successors (never itself)
   with Dirichlet(1) probabilities;
3. each segment lasts ``d_j ~ U{min_duration..max_duration}`` frames, each frame a different image
   of class ``c_j`` (drawn without replacement within the segment);
4. the pixels are binarized once (a Bernoulli draw of each grey level, seed fixed), or kept as
   grey levels in [0, 1] with ``binarize="none"``.

The images come from scikit-learn's digits, split as ``digits`` splits them (test 300, valid 297,
train 1200 images): a test sequence shows only test images. Splits: 500 / 50 / 100 sequences of
3..8 segments of 2..5 frames (6..40 frames). Each split is ``{"x": (N, T, 64), "mask": (N, T),
"lengths": (N,), "units": (N, T)}``, ``units`` the true class of each frame (-1 on padding);
models that do not name ``units`` never see it.
"""

from __future__ import annotations

import numpy as np
import torch

from pyrovae.data.datasets import load_dataset, register_dataset
from pyrovae.data.sequences import SequenceDataSet, pad_sequences

__all__ = ["unit_chain", "digit_sequences", "load_digit_sequences"]

NUM_CLASSES = 10
_SEED = 0


def unit_chain(num_classes: int = NUM_CLASSES, successors: int = 3, seed: int = _SEED) -> np.ndarray:
    """The fixed transition matrix ``(C, C)`` of the classes: row ``c`` puts Dirichlet(1)
    probabilities on ``successors`` other classes, 0 elsewhere (and on ``c`` itself).

    >>> P = unit_chain()
    >>> P.shape, bool(np.allclose(P.sum(1), 1)), int((P > 0).sum(1).max()), float(np.trace(P))
    ((10, 10), True, 3, 0.0)
    """
    rng = np.random.RandomState(seed)
    P = np.zeros((num_classes, num_classes))
    for c in range(num_classes):
        others = [k for k in range(num_classes) if k != c]
        chosen = rng.choice(others, successors, replace=False)
        P[c, chosen] = rng.dirichlet(np.ones(successors))
    return P


def digit_sequences(images: np.ndarray, labels: np.ndarray, num_sequences: int, rng: np.random.RandomState,
                    transition: np.ndarray, segments=(3, 8), duration=(2, 5)) -> dict:
    """A padded split of ``num_sequences`` sequences of rows of ``images`` ``(M, D)`` (see the
    module's docstring), with the true ``units`` of every frame."""
    pools = [np.flatnonzero(labels == c) for c in range(len(transition))]
    if min(len(pool) for pool in pools) < duration[1]:
        raise ValueError(f"every class needs at least {duration[1]} images (the longest segment)")
    rows, units = [], []
    for _ in range(num_sequences):
        c = rng.randint(len(transition))
        frames, classes = [], []
        for j in range(rng.randint(segments[0], segments[1] + 1)):
            if j:
                c = rng.choice(len(transition), p=transition[c])
            d = rng.randint(duration[0], duration[1] + 1)
            frames.extend(rng.choice(pools[c], d, replace=False))
            classes.extend([c] * d)
        rows.append(images[frames])
        units.append(np.asarray(classes))
    split = pad_sequences(rows, dtype=torch.float32)
    split["units"] = pad_sequences(units, pad=-1)["x"]
    return split


def load_digit_sequences(binarize: str = "static", sizes=(500, 50, 100), seed: int = _SEED) -> SequenceDataSet:
    """The ``digit-sequences`` data set (module docstring); ``binarize`` ``"static"`` or ``"none"``."""
    if binarize not in ("static", "none"):
        raise ValueError(f"digit-sequences takes binarize='static' (the default) or 'none', got {binarize!r}")
    digits = load_dataset("digits", binarize="none")
    rng = np.random.RandomState(seed)
    transition = unit_chain(seed=seed)
    splits = {}
    for name, size in zip(("test", "valid", "train"), sizes[::-1]):  # test first: its draw is fixed
        part = getattr(digits, name)
        splits[name] = digit_sequences(part["x"].numpy(), part["y"].numpy(), size, rng, transition)
    if binarize == "static":
        generator = torch.Generator().manual_seed(seed)
        for name in ("test", "valid", "train"):
            x = splits[name]["x"]
            splits[name]["x"] = torch.bernoulli(x, generator=generator) * splits[name]["mask"][..., None]
    return SequenceDataSet("digit-sequences", splits["train"], splits["valid"], splits["test"], (64,), binarize)


@register_dataset("digit-sequences")
def _load_digit_sequences(data_dir, binarize, valid_size) -> SequenceDataSet:
    """8x8 digits in sequences whose classes follow a Markov chain, 2-5 frames a class (x, mask, lengths, units)."""
    if valid_size is not None:
        raise ValueError("digit-sequences has a fixed split; leave valid_size unset")
    return load_digit_sequences(binarize or "static")
