"""Semi-supervised data sets: a labelled data set with all but a few labels hidden.

:func:`semi_supervised` keeps ``num_labels`` labels of the training split, the same number
per class (``num_labels / C``), chosen by ``seed``; every other training row is unlabelled.
The splits are dicts of tensors as everywhere in the suite, with one more key:

- ``"x"``: the images, as the base data set has them (binarized the same way);
- ``"y"``: int64 labels, **-1 where the label is hidden** (so nothing can read it by mistake);
- ``"labelled"``: bool, True on the rows whose label is kept.

**The training stream** is the unlabelled pool (all other training rows, or the first
``unlabelled`` of them in a seeded order, to save time) followed by the labelled rows repeated
``r`` times, so that shuffled batches carry labelled rows all the time:
``r = max(MIN_REPEATS, round(0.1 * N / num_labels))`` (:func:`default_repeats`) with ``N`` the
number of distinct training images (pool plus labelled): the labelled rows make up at least a
tenth of an epoch, and each label is in it at least 10 times, about 100 passes over each label
in ``pyrovae fit``'s 10 epochs on MNIST (measured: M2 at 3000 labels, docs/semi-supervised.md,
"A floor on the labelled repeats"). The ``enum`` objective's classifier weight per labelled
row that equals Kingma et al.'s ``alpha = 0.1 N`` is then ``paper_alpha = 0.1 N / (r num_labels)``
(1.0 for ``mnist-100labels``, 0.17 for ``mnist-3000labels``).
``valid`` and ``test`` keep their true labels in ``y`` (the classification error is read
against them) and have ``labelled`` all False: their bound sums over y.

Registered names (``pyrovae list``): ``mnist-100labels``, ``mnist-600labels``,
``mnist-1000labels``, ``mnist-3000labels`` and ``digits-100labels``, each with seed 0; add
``-seed1`` or ``-seed2`` for the other label draws (``mnist-100labels-seed2``). The name is
saved in run.json, so ``pyrovae evaluate`` and ``--resume`` rebuild the same labels. Other
choices from Python: ``semi_supervised(load_dataset("mnist"), 300, seed=4, unlabelled=10000)``,
or :func:`register_semi_supervised` in a module given to ``--import``.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import torch

from pyrovae.data.datasets import DataSet, load_dataset, register_dataset

__all__ = ["MIN_REPEATS", "SemiSupervisedDataSet", "balanced_labels", "default_repeats", "register_semi_supervised",
           "semi_supervised"]

UNKNOWN = -1

#: The fewest times each labelled row is in an epoch's stream by default: 10, about 100 passes
#: over each label in ``pyrovae fit``'s 10 epochs on MNIST. At 3000 labels the tenth-of-an-epoch
#: rule alone gave 2 (20 passes) and left M2 behind the labelled-only classifier at equal steps.
MIN_REPEATS = 10


def default_repeats(num_unlabelled: int, num_labels: int) -> int:
    """Times each labelled row is in an epoch by default: enough for the labelled rows to be about
    a tenth of the stream, and at least :data:`MIN_REPEATS` (2 -> 10 at 3000 labels with all of
    MNIST; 50 at 100 labels, unchanged)."""
    return max(MIN_REPEATS, round(0.1 * (num_unlabelled + num_labels) / num_labels))


@dataclasses.dataclass
class SemiSupervisedDataSet(DataSet):
    """A :class:`~pyrovae.data.datasets.DataSet` whose splits carry ``labelled`` and ``y``
    (-1 where hidden); ``num_labels`` kept labels, each repeated ``repeats`` times in the
    training stream, ``num_unlabelled`` unlabelled training rows, ``label_seed`` the draw."""

    num_labels: int = 0
    repeats: int = 1
    num_unlabelled: int = 0
    label_seed: int = 0

    @property
    def paper_alpha(self) -> float:
        """The ``enum`` objective's ``alpha`` (per labelled row) equal to Kingma et al.'s 0.1 N."""
        return 0.1 * (self.num_unlabelled + self.num_labels) / (self.repeats * self.num_labels)

    def labelled_rows(self) -> dict:
        """The distinct labelled training rows, ``{"x", "y"}`` (what a supervised baseline sees)."""
        first = self.num_unlabelled
        return {"x": self.train["x"][first:first + self.num_labels], "y": self.train["y"][first:first + self.num_labels]}


def balanced_labels(y: torch.Tensor, num_labels: int, seed: int = 0) -> torch.Tensor:
    """Indices of ``num_labels`` rows of the labels ``y``, ``num_labels / C`` of each of the
    ``C`` classes present, drawn without replacement by ``seed`` (sorted)."""
    classes = torch.unique(y)
    if num_labels % len(classes):
        raise ValueError(f"num_labels={num_labels} is not a multiple of the {len(classes)} classes: "
                         "the labelled set is balanced, the same number per class")
    per_class = num_labels // len(classes)
    g = torch.Generator().manual_seed(seed)
    chosen = []
    for c in classes.tolist():
        rows = (y == c).nonzero().squeeze(-1)
        if len(rows) < per_class:
            raise ValueError(f"class {c} has {len(rows)} training rows, fewer than the {per_class} labels asked per class")
        chosen.append(rows[torch.randperm(len(rows), generator=g)[:per_class]])
    return torch.cat(chosen).sort().values


def semi_supervised(base: DataSet, num_labels: int, seed: int = 0, unlabelled: Optional[int] = None,
                    repeats: Optional[int] = None, name: Optional[str] = None) -> SemiSupervisedDataSet:
    """``base`` with ``num_labels`` training labels kept (balanced, drawn by ``seed``), the rest hidden.

    :param DataSet base: a labelled data set (its splits have ``y``).
    :param int num_labels: labels kept, a multiple of the number of classes.
    :param int seed: the label draw (and the order of a subset of the pool).
    :param int unlabelled: keep only this many unlabelled rows (None: all).
    :param int repeats: times each labelled row appears in an epoch (None: :func:`default_repeats`).
    :param str name: the data set's name (default ``{base}-{num_labels}labels[-seed{seed}]``).
    """
    if "y" not in base.train or base.num_classes is None:
        raise ValueError(f"data set {base.name!r} has no labels: a semi-supervised set needs a labelled one")
    if num_labels < 1:
        raise ValueError(f"num_labels must be >= 1, got {num_labels}")
    x, y = base.train["x"], base.train["y"]
    keep = balanced_labels(y, num_labels, seed)
    pool = torch.ones(len(y), dtype=torch.bool)
    pool[keep] = False
    pool = pool.nonzero().squeeze(-1)
    if unlabelled is not None:
        if not 0 < unlabelled <= len(pool):
            raise ValueError(f"unlabelled must be in 1..{len(pool)} (the rows left after the labels), got {unlabelled}")
        g = torch.Generator().manual_seed(10_000 + seed)
        pool = pool[torch.randperm(len(pool), generator=g)[:unlabelled]].sort().values
    if repeats is None:
        repeats = default_repeats(len(pool), num_labels)
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    rows = torch.cat([pool, keep.repeat(repeats)])
    labelled = torch.cat([torch.zeros(len(pool), dtype=torch.bool), torch.ones(num_labels * repeats, dtype=torch.bool)])
    hidden = torch.where(labelled, y[rows], torch.full_like(y[rows], UNKNOWN))
    train = {"x": x[rows], "y": hidden, "labelled": labelled}

    def unlabelled_split(split):
        return {"x": split["x"], "y": split["y"], "labelled": torch.zeros(len(split["x"]), dtype=torch.bool)}

    if name is None:
        name = f"{base.name}-{num_labels}labels" + (f"-seed{seed}" if seed else "")
    return SemiSupervisedDataSet(name, train, unlabelled_split(base.valid), unlabelled_split(base.test),
                                 image_shape=base.image_shape, binarize=base.binarize, num_classes=base.num_classes,
                                 num_labels=num_labels, repeats=repeats, num_unlabelled=len(pool), label_seed=seed)


def register_semi_supervised(base: str, num_labels: int, seed: int = 0, name: Optional[str] = None,
                             unlabelled: Optional[int] = None) -> str:
    """Register ``{base}-{num_labels}labels[-seed{seed}]`` (or ``name``) for ``--data``; returns the name."""
    name = name or f"{base}-{num_labels}labels" + (f"-seed{seed}" if seed else "")

    def loader(data_dir, binarize, valid_size):
        return semi_supervised(load_dataset(base, data_dir=data_dir, binarize=binarize, valid_size=valid_size),
                               num_labels, seed, unlabelled=unlabelled, name=name)

    loader.__doc__ = (f"{base} with {num_labels} training labels kept ({num_labels // 10} per class, label draw "
                      f"{seed}), the rest unlabelled (Kingma et al. 2014's M2 setting)")
    register_dataset(name)(loader)
    return name


for _base, _counts in (("mnist", (100, 600, 1000, 3000)), ("digits", (100,))):
    for _count in _counts:
        for _seed in (0, 1, 2):
            register_semi_supervised(_base, _count, _seed)
