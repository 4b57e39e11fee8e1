"""The labelled-only baseline of the semi-supervised benchmarks (m2_mnist.py, m1m2_mnist.py):
M2's classifier network trained alone by cross-entropy on the labelled rows, and its test error.
Imported by those scripts (run as ``python benchmarks/<script>.py``, so this folder is on the path)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from pyrovae.nn import MLP


def fit_labelled_classifier(rows: dict, hidden_dims, num_classes: int, lr: float, seed: int, steps: int,
                            binarize: bool = False) -> MLP:
    """An MLP (softplus, as M2's guide) on ``rows`` (``x``, ``y``), ``steps`` Adam steps of up to
    100 rows drawn with replacement; ``binarize`` draws each batch's pixels as Bernoulli (dynamic
    binarization, as M2 sees them)."""
    torch.manual_seed(seed)
    net = MLP(rows["x"].shape[-1], tuple(hidden_dims), num_classes, "softplus")
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    n = len(rows["y"])
    for _ in range(steps):
        index = torch.randint(n, (min(100, n),), generator=g)
        x = torch.bernoulli(rows["x"][index], generator=g) if binarize else rows["x"][index]
        loss = F.cross_entropy(net(x), rows["y"][index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return net


@torch.no_grad()
def error(classify, test: dict) -> float:
    """Test error in percent of ``classify(x)``'s argmax against ``test["y"]``."""
    return 100.0 * float(wrong(classify, test).float().mean())


@torch.no_grad()
def wrong(classify, test: dict) -> torch.Tensor:
    """``(N,)`` bool: which test images ``classify(x)``'s argmax gets wrong."""
    return classify(test["x"]).argmax(-1) != test["y"]


def paired_error_difference(wrong_a: torch.Tensor, wrong_b: torch.Tensor) -> dict:
    """Test error of a minus that of b, paired on the same test images (McNemar's comparison):
    ``diff`` (points) is the mean of ``d_n = wrong_a[n] - wrong_b[n]`` times 100, ``stderr`` its
    standard error over the images, ``a_only`` / ``b_only`` the images only a / only b gets wrong,
    and ``p`` McNemar's exact two-sided p-value (binomial(a_only + b_only, 1/2))."""
    a, b = wrong_a.bool(), wrong_b.bool()
    if a.shape != b.shape or a.dim() != 1 or a.numel() < 2:
        raise ValueError(f"need two (N,) vectors over the same N >= 2 images, got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}")
    d = a.double() - b.double()
    a_only, b_only = int((a & ~b).sum()), int((b & ~a).sum())
    n, k = a_only + b_only, min(a_only, b_only)
    p = min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n) if n else 1.0
    return {"diff": 100 * float(d.mean()), "stderr": 100 * float(d.std() / math.sqrt(d.numel())),
            "a_only": a_only, "b_only": b_only, "p": p}
