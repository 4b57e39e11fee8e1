"""The labelled-only baseline of the semi-supervised benchmarks (m2_mnist.py, m1m2_mnist.py):
M2's classifier network trained alone by cross-entropy on the labelled rows, and its test error.
Imported by those scripts (run as ``python benchmarks/<script>.py``, so this folder is on the path)."""

from __future__ import annotations

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
    return 100.0 * float((classify(test["x"]).argmax(-1) != test["y"]).float().mean())
