"""
Set data sets: each datapoint is a *set* of items (Edwards & Storkey's Neural Statistician, and
the models that learn from sets after it).

A split of a :class:`SetDataSet` is a dict of tensors with one row per set, padded where sets
differ in size:

- ``"x"``: float32 ``(S, M, D)``, the items of each set (``M`` the split's largest set, ``D``
  one item's flattened size); padding is zeros.
- ``"mask"``: bool ``(S, M)``, True on the real items, False on padding.
- ``"sizes"``: int64 ``(S,)``, the real items of each set (``mask.sum(1)``).
- ``"y"``: int64 ``(S,)``, the set's class (the distribution family, the digit), where known;
  ``dataset.classes`` names them.

The pair receives these as keyword arguments like any batch (``fit`` batches *sets*), so a
model masks its per-item sites with ``poutine.mask(mask=mask)`` inside its item plate and
padding never enters the loss; :func:`as_sets` turns ``(x, mask)`` into that shape.

Builders:

- :func:`pad_sets`: a list of item tensors, one per set, as a padded split.
- :func:`distribution_sets`: the first experiment of Edwards & Storkey (2016, section 5.1):
  sets of 1-D samples from a Gaussian, uniform, exponential or Laplace distribution whose mean
  and variance are drawn at random (mean ~ U[-1, 1], variance ~ U[0.5, 2]).
- :func:`sets_by_class` / :func:`class_sets`: sets drawn from a labelled data set, one class per
  set, with classes held out for few-shot tests (train on some classes, test on the others).

Registered (``--data``): ``synthetic-sets`` (4,000 / 500 / 1,000 sets of 200 samples, the
four families in turn; seeds 0, 1, 2), ``digits-sets`` (scikit-learn's 8x8 digits, sets of 5
images of one digit; train and valid on digits 0-6, test on the held-out digits 7-9),
``mnist-sets`` (MNIST, the same split of classes, sets of 5) and ``fashion-mnist-sets`` (Fashion-MNIST, the
same: classes 0-6 to train, 7-9 (sneaker, bag, ankle boot) held out).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional, Sequence

import numpy as np
import torch

from pyrovae.data.datasets import DataSet, load_dataset, register_dataset

__all__ = ["FAMILIES", "SetDataSet", "as_sets", "pad_sets", "distribution_sets", "sets_by_class", "class_sets",
           "load_synthetic_sets", "load_class_sets"]

#: The families of :func:`distribution_sets`; ``y`` indexes this tuple.
FAMILIES = ("gaussian", "uniform", "exponential", "laplace")
#: The default split of classes of the class-as-set data sets: train on these, test on the others.
TRAIN_DIGITS, TEST_DIGITS = (0, 1, 2, 3, 4, 5, 6), (7, 8, 9)


def as_sets(x: torch.Tensor, mask: Optional[torch.Tensor] = None):
    """``(x, mask)`` as ``(S, M, D)`` float and ``(S, M)`` bool; no mask: every item is real.
    A 2-D ``x`` ``(S, M)`` is a set of scalars (``D = 1``)."""
    if x.dim() == 2:
        x = x.unsqueeze(-1)
    if x.dim() != 3:
        raise ValueError(f"a set model takes x of shape (sets, items, D) (or (sets, items) for scalars), "
                         f"got {tuple(x.shape)}")
    if mask is None:
        mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
    if tuple(mask.shape) != tuple(x.shape[:2]):
        raise ValueError(f"mask has shape {tuple(mask.shape)}; it must be (sets, items) = {tuple(x.shape[:2])}")
    return x, mask.bool()


def pad_sets(items: Sequence[torch.Tensor], max_size: Optional[int] = None, labels=None) -> dict:
    """A split from one tensor of items per set, each ``(n_i, ...)``: ``x`` ``(S, M, D)`` padded
    with zeros to ``M = max_size`` (default the largest ``n_i``), ``mask``, ``sizes`` and, with
    ``labels``, ``y``.

    >>> split = pad_sets([torch.ones(2, 1), torch.ones(3, 1)])
    >>> split["x"].shape, split["mask"].tolist(), split["sizes"].tolist()
    (torch.Size([2, 3, 1]), [[True, True, False], [True, True, True]], [2, 3])
    """
    if not items:
        raise ValueError("pad_sets needs at least one set")
    flat = [torch.as_tensor(s, dtype=torch.float32) for s in items]
    flat = [s.reshape(len(s), math.prod(s.shape[1:])) for s in flat]
    widths = {s.shape[1] for s in flat}
    if len(widths) != 1:
        raise ValueError(f"every item must have the same size; got item sizes {sorted(widths)}")
    sizes = torch.tensor([len(s) for s in flat], dtype=torch.int64)
    if int(sizes.min()) < 1:
        raise ValueError("every set needs at least one item; an empty set has no statistic")
    width = int(sizes.max()) if max_size is None else max_size
    if width < int(sizes.max()):
        raise ValueError(f"max_size={max_size} is smaller than the largest set ({int(sizes.max())} items)")
    x = torch.zeros(len(flat), width, widths.pop())
    for i, s in enumerate(flat):
        x[i, :len(s)] = s
    split = {"x": x, "mask": torch.arange(width) < sizes[:, None], "sizes": sizes}
    if labels is not None:
        split["y"] = torch.as_tensor(labels, dtype=torch.int64)
    return split


@dataclasses.dataclass
class SetDataSet(DataSet):
    """
    A :class:`~pyrovae.data.datasets.DataSet` whose rows are sets (see the module's docstring):
    each split is ``{"x" (S, M, D), "mask" (S, M), "sizes" (S,)}`` and ``"y"`` where the sets
    have classes. ``image_shape`` is one *item*'s shape.

    :ivar tuple classes: the names of ``y``'s values (families, digits), or None.
    :ivar dict held_out: which classes each split's sets come from, e.g.
        ``{"train": (0, ..., 6), "valid": (0, ..., 6), "test": (7, 8, 9)}``, or None.
    """

    classes: tuple | None = None
    held_out: dict | None = None

    def __post_init__(self):
        for split_name in ("train", "valid", "test"):
            split = getattr(self, split_name)
            missing = {"x", "mask", "sizes"} - set(split)
            if missing:
                raise ValueError(f"{self.name} {split_name}: a set split needs x, mask and sizes; "
                                 f"{sorted(missing)} missing")
            x, mask, sizes = split["x"], split["mask"], split["sizes"]
            if x.dim() != 3 or x.shape[2] != self.x_dim:
                raise ValueError(f"{self.name} {split_name}: x has shape {tuple(x.shape)}, expected (sets, items, "
                                 f"{self.x_dim}) for items of shape {self.image_shape}")
            if mask.dtype != torch.bool or mask.shape != x.shape[:2] or sizes.shape != x.shape[:1]:
                raise ValueError(f"{self.name} {split_name}: x {tuple(x.shape)}, mask {tuple(mask.shape)} "
                                 f"{mask.dtype} and sizes {tuple(sizes.shape)} disagree: mask is (sets, items) "
                                 f"bool, sizes (sets,)")
            if not torch.equal(mask.sum(1), sizes):
                raise ValueError(f"{self.name} {split_name}: sizes are not the mask's counts of real items")

    def dims(self) -> dict:
        """The sizes to build a pair with: ``x_dim`` (one item), ``num_classes`` where the sets
        have classes, and ``likelihood``: ``"bernoulli"`` for binary items, else ``"gaussian"``
        (a model with a ``likelihood`` option takes it unless the command line sets one)."""
        dims = {"x_dim": self.x_dim, "likelihood": "bernoulli" if self.binary else "gaussian"}
        if self.num_classes is not None:
            dims["num_classes"] = self.num_classes
        return dims


# ------------------------------------------------------------------------------- synthetic families


def _family_samples(family: torch.Tensor, mean: torch.Tensor, var: torch.Tensor, n: int, g: torch.Generator):
    """``(S, n)`` samples, row ``s`` of family ``family[s]`` (an index of :data:`FAMILIES`) with
    mean ``mean[s]`` and variance ``var[s]``."""
    if bool(((family < 0) | (family >= len(FAMILIES))).any()):
        raise ValueError(f"families are 0..{len(FAMILIES) - 1} ({FAMILIES}), got {family.unique().tolist()}")
    shape = (len(family), n)
    mean, sd, family = mean[:, None], var.sqrt()[:, None], family[:, None]
    u = torch.rand(shape, generator=g)
    normal = torch.randn(shape, generator=g)
    centred = u - 0.5
    standard = torch.stack([
        normal,  # Gaussian
        math.sqrt(3.0) * (2 * u - 1),  # uniform on +- sqrt(3)
        -1.0 - torch.log1p(-u),  # exponential of rate 1, shifted to mean 0
        -centred.sign() * torch.log1p(-2 * centred.abs()) / math.sqrt(2.0),  # Laplace of scale 1 / sqrt(2)
    ])  # (4, S, n), each of mean 0 and variance 1
    return mean + sd * standard.gather(0, family.expand(shape)[None])[0]


def distribution_sets(num_sets: int, set_size: int = 200, *, min_size: Optional[int] = None, seed: int = 0,
                      mean_range=(-1.0, 1.0), var_range=(0.5, 2.0)) -> dict:
    """
    Edwards & Storkey's synthetic sets (2016, section 5.1): set ``s`` holds samples of family
    ``s % 4`` of :data:`FAMILIES` (Gaussian, uniform, exponential, Laplace), its mean drawn from
    U(``mean_range``) and its variance from U(``var_range``). Sizes are ``set_size`` (the
    paper's 200), or drawn uniformly in ``[min_size, set_size]`` (padded and masked).

    :returns: a split ``{"x" (S, M, 1), "mask", "sizes", "y" (the family), "mean", "var"}``.

    >>> split = distribution_sets(8, 50, seed=0)
    >>> split["x"].shape, split["y"].tolist()
    (torch.Size([8, 50, 1]), [0, 1, 2, 3, 0, 1, 2, 3])
    """
    if type(num_sets) is not int or num_sets < 1 or type(set_size) is not int or set_size < 1:
        raise ValueError(f"num_sets and set_size must be positive ints, got {num_sets!r}, {set_size!r}")
    if min_size is not None and not 1 <= min_size <= set_size:
        raise ValueError(f"min_size must be in [1, set_size={set_size}], got {min_size!r}")
    g = torch.Generator().manual_seed(seed)
    means = mean_range[0] + (mean_range[1] - mean_range[0]) * torch.rand(num_sets, generator=g)
    variances = var_range[0] + (var_range[1] - var_range[0]) * torch.rand(num_sets, generator=g)
    sizes = (torch.full((num_sets,), set_size) if min_size is None
             else torch.randint(min_size, set_size + 1, (num_sets,), generator=g))
    families = torch.arange(num_sets) % len(FAMILIES)
    samples = _family_samples(families, means, variances, set_size, g)  # (S, set_size)
    mask = torch.arange(set_size) < sizes[:, None]
    split = {"x": (samples * mask)[..., None], "mask": mask, "sizes": sizes.to(torch.int64), "y": families}
    split["mean"], split["var"] = means, variances
    return split


def load_synthetic_sets(num_train: int = 4000, num_valid: int = 500, num_test: int = 1000, set_size: int = 200,
                        min_size: Optional[int] = None) -> SetDataSet:
    """The synthetic families as a :class:`SetDataSet` (train, valid and test drawn with seeds
    0, 1 and 2); ``y`` is the family, ``dataset.classes`` is :data:`FAMILIES`."""
    splits = [distribution_sets(n, set_size, min_size=min_size, seed=seed)
              for seed, n in enumerate((num_train, num_valid, num_test))]
    return SetDataSet("synthetic-sets", *splits, (1,), "none", num_classes=len(FAMILIES), classes=FAMILIES)


# ------------------------------------------------------------------------------- classes as sets


def sets_by_class(x: torch.Tensor, y: torch.Tensor, set_size: int, *, classes: Optional[Sequence[int]] = None,
                  num_sets: Optional[int] = None, min_size: Optional[int] = None, seed: int = 0) -> dict:
    """
    Sets of items of one class each, from rows ``x`` ``(N, D)`` labelled ``y`` ``(N,)``.

    ``num_sets=None``: each class's rows are shuffled and cut into disjoint sets of
    ``set_size`` (a last, smaller remainder is dropped), so every row is in at most one set.
    ``num_sets=n``: ``n`` sets, the classes in turn, each ``set_size`` distinct rows drawn at
    random from its class (rows recur across sets: many training sets from few images).
    ``min_size``: each set keeps a random number of its items in ``[min_size, set_size]``
    (padded and masked). ``y`` of the result is the class of each set.
    """
    if type(set_size) is not int or set_size < 1:
        raise ValueError(f"set_size must be a positive int, got {set_size!r}")
    if min_size is not None and not 1 <= min_size <= set_size:
        raise ValueError(f"min_size must be in [1, set_size={set_size}], got {min_size!r}")
    g = torch.Generator().manual_seed(seed)
    classes = sorted(int(c) for c in (torch.unique(y) if classes is None else classes))
    rows = {c: torch.nonzero(y == c).flatten() for c in classes}
    for c, r in rows.items():
        if len(r) < set_size:
            raise ValueError(f"class {c} has {len(r)} rows, fewer than set_size={set_size}")
    chosen, labels = [], []
    if num_sets is None:
        for c in classes:
            order = rows[c][torch.randperm(len(rows[c]), generator=g)]
            for start in range(0, len(order) - set_size + 1, set_size):
                chosen.append(order[start:start + set_size])
                labels.append(c)
    else:
        for i in range(num_sets):
            c = classes[i % len(classes)]
            chosen.append(rows[c][torch.randperm(len(rows[c]), generator=g)[:set_size]])
            labels.append(c)
    if min_size is not None:
        keep = torch.randint(min_size, set_size + 1, (len(chosen),), generator=g)
        chosen = [index[:int(k)] for index, k in zip(chosen, keep)]
    return pad_sets([x[index] for index in chosen], set_size, labels=labels)


def class_sets(data: DataSet, set_size: int = 5, *, train_classes: Sequence[int] = TRAIN_DIGITS,
               test_classes: Sequence[int] = TEST_DIGITS, num_train_sets: Optional[int] = None,
               min_size: Optional[int] = None, name: Optional[str] = None) -> SetDataSet:
    """
    A labelled data set's classes as sets, with classes held out: train and valid sets come
    from ``train_classes`` (the data set's train and valid rows), test sets from
    ``test_classes`` only (the rows of *every* split of those classes, which training never
    sees), cut into disjoint sets. ``num_train_sets``: that many training sets drawn at random
    (see :func:`sets_by_class`), else disjoint ones. ``y`` is the class of each set.
    """
    overlap = set(train_classes) & set(test_classes)
    if overlap:
        raise ValueError(f"classes {sorted(overlap)} are in both train_classes and test_classes; a held-out class "
                         f"must be unseen in training")
    for split_name in ("train", "valid", "test"):
        if "y" not in getattr(data, split_name):
            raise ValueError(f"{data.name} has no labels (y) in {split_name}; sets by class need them")
    train = sets_by_class(data.train["x"], data.train["y"], set_size, classes=train_classes, num_sets=num_train_sets,
                          min_size=min_size, seed=0)
    valid = sets_by_class(data.valid["x"], data.valid["y"], set_size, classes=train_classes, min_size=min_size,
                          seed=1)
    every_x = torch.cat([data.train["x"], data.valid["x"], data.test["x"]])
    every_y = torch.cat([data.train["y"], data.valid["y"], data.test["y"]])
    test = sets_by_class(every_x, every_y, set_size, classes=test_classes, min_size=min_size, seed=2)
    if data.binarize == "dynamic":  # the rows from the train split are grey: draw them once, as valid and test were
        test["x"] = torch.bernoulli(test["x"], generator=torch.Generator().manual_seed(0))
    held_out = {"train": tuple(train_classes), "valid": tuple(train_classes), "test": tuple(test_classes)}
    return SetDataSet(name or f"{data.name}-sets", train, valid, test, data.image_shape, data.binarize,
                      num_classes=data.num_classes, classes=tuple(range(data.num_classes or 0)) or None,
                      held_out=held_out)


def load_class_sets(base: str, data_dir=None, binarize=None, set_size: int = 5, **kwargs) -> SetDataSet:
    """:func:`class_sets` of the named data set ``base`` (``digits``, ``mnist``, ``fashion-mnist``),
    binarized as that data set is (``dynamic`` by default: the training sets are redrawn each
    batch, valid and test drawn once)."""
    return class_sets(load_dataset(base, data_dir=data_dir, binarize=binarize), set_size, **kwargs)


def _fixed_split(name, valid_size):
    if valid_size is not None:
        raise ValueError(f"{name} has fixed splits of sets; leave valid_size unset")


@register_dataset("synthetic-sets")
def _load_synthetic_sets(data_dir, binarize, valid_size) -> SetDataSet:
    """Edwards & Storkey's 1-D sets: 4000/500/1000 sets of 200 samples, Gaussian/uniform/exponential/Laplace (y)."""
    if binarize not in (None, "none"):
        raise ValueError(f"synthetic-sets holds real numbers: binarize={binarize!r} cannot apply; leave it unset")
    _fixed_split("synthetic-sets", valid_size)
    return load_synthetic_sets()


@register_dataset("digits-sets")
def _load_digits_sets(data_dir, binarize, valid_size) -> SetDataSet:
    """8x8 digits as sets of 5 of one digit: 2000 train sets of digits 0-6, test sets of held-out 7-9."""
    _fixed_split("digits-sets", valid_size)
    return load_class_sets("digits", data_dir, binarize, 5, num_train_sets=2000)


@register_dataset("mnist-sets")
def _load_mnist_sets(data_dir, binarize, valid_size) -> SetDataSet:
    """MNIST as sets of 5 of one digit: disjoint train sets of digits 0-6, test sets of held-out 7-9."""
    _fixed_split("mnist-sets", valid_size)
    return load_class_sets("mnist", data_dir, binarize, 5)


@register_dataset("fashion-mnist-sets")
def _load_fashion_mnist_sets(data_dir, binarize, valid_size) -> SetDataSet:
    """Fashion-MNIST as sets of 5 of one class: disjoint train sets of classes 0-6 (T-shirt ... shirt),
    test sets of held-out 7-9 (sneaker, bag, ankle boot)."""
    _fixed_split("fashion-mnist-sets", valid_size)
    return load_class_sets("fashion-mnist", data_dir, binarize, 5)
