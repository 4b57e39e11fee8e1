"""Data sets of learned features: every split of a data set replaced by a guide's posterior means.

Kingma, Rezende, Mohamed and Welling (2014)'s M1+M2 fits a VAE (M1) to the images first and
then trains the semi-supervised M2 on the means of M1's :math:`q(z_1 \\mid x)` instead of the
pixels. :func:`encoded_features` makes that second data set: ``x`` becomes
:math:`\\mathbb{E}_{q}[z \\mid x]` ``(N, z_dim)`` for every split, the labels ``y`` (and any other
per-row key) are kept row for row, and the result is a plain continuous
:class:`~pyrovae.data.datasets.DataSet` (``binarize="none"``) that
:func:`~pyrovae.data.semisupervised.semi_supervised` accepts: the same seed keeps the same
labelled rows as on the images, since the draw reads only ``y``.

A training split stored as grey levels (``binarize="dynamic"``) is binarized once, with
``seed``, before it is encoded, so that training features come from inputs like the ones the
encoder saw and like the (already binary) valid and test splits.

    >>> import torch
    >>> from pyrovae.data.datasets import load_dataset
    >>> from pyrovae.guides.diag import DiagNormalGuide
    >>> features = encoded_features(load_dataset("digits"), DiagNormalGuide(x_dim=64, z_dim=3))
    >>> features.image_shape, features.binarize, features.train["x"].shape[1]
    ((3,), 'none', 3)
"""

from __future__ import annotations

from typing import Callable, Optional

import torch

from pyrovae.data.datasets import DataSet
from pyrovae.distributions.mean import posterior_mean

__all__ = ["encode_means", "encoded_features"]


@torch.no_grad()
def encode_means(encode: Callable[[torch.Tensor], object], x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """The means of ``encode(x)`` (a distribution with batch shape ``(n,)`` and a vector event),
    ``(N, z_dim)``, computed ``batch_size`` rows at a time, on ``x``'s device."""
    if x.dim() != 2:
        raise ValueError(f"encode_means takes rows (N, D), got x of shape {tuple(x.shape)}")
    if len(x) == 0:
        raise ValueError("encode_means got no rows to encode")
    parts = []
    for start in range(0, len(x), batch_size):
        chunk = x[start:start + batch_size]
        q = encode(chunk)
        event = getattr(q, "event_shape", None)
        if event is None or len(event) != 1 or tuple(q.batch_shape) != (len(chunk),):
            raise ValueError("encode(x) must return a distribution with batch shape (n,) and a vector event "
                             f"(a guide's encode method, e.g. guides/diag.py's); got {type(q).__name__} with batch "
                             f"shape {tuple(getattr(q, 'batch_shape', ()))} and event shape {tuple(event or ())}")
        parts.append(posterior_mean(q))
    return torch.cat(parts)


def encoded_features(data: DataSet, guide, batch_size: int = 1000, seed: int = 0,
                     name: Optional[str] = None) -> DataSet:
    """``data`` with ``x`` of every split replaced by the means of ``guide.encode(x)``.

    :param DataSet data: the images (labels, if any, are kept).
    :param guide: a guide with ``encode(x) -> q(z | x)`` (e.g. the suite's ``diag``), or that
        method itself; it is put in eval mode for the encoding and restored after.
    :param int batch_size: rows encoded at a time.
    :param int seed: the one binarization of a ``binarize="dynamic"`` training split.
    :param str name: the new data set's name (default ``{data.name}-features``).
    """
    encode = getattr(guide, "encode", guide)
    if not callable(encode):
        raise ValueError(f"encoded_features needs a guide with an encode(x) method or that method; got {type(guide).__name__}")
    module = guide if isinstance(guide, torch.nn.Module) else None
    was_training = module.training if module is not None else False
    if module is not None:
        module.eval()
    try:
        train = data.train
        if data.binarize == "dynamic":
            g = torch.Generator(device=train["x"].device).manual_seed(seed)
            train = {**train, "x": (torch.rand(train["x"].shape, generator=g, device=train["x"].device,
                                               dtype=train["x"].dtype) < train["x"]).to(train["x"].dtype)}

        def split(values):
            return {**values, "x": encode_means(encode, values["x"], batch_size)}

        train, valid, test = split(train), split(data.valid), split(data.test)
    finally:
        if module is not None:
            module.train(was_training)
    return DataSet(name or f"{data.name}-features", train, valid, test, image_shape=(train["x"].shape[1],),
                   binarize="none", num_classes=data.num_classes)
