"""The CVAE's recognition guide q(z | x, y) (guides/cvae.py)."""

import pyro.poutine as poutine
import pytest
import torch

from pyrovae.guides.cvae import CVAEGuide
from pyrovae.infer.importance import latent_sites
from pyrovae.registry import build, get_guide


def test_the_guide_sees_both_input_and_output():
    torch.manual_seed(0)
    guide = CVAEGuide(x_dim=6, y_dim=4, z_dim=3, hidden_dims=(8,))
    x, y = torch.randn(5, 6), torch.bernoulli(torch.full((5, 4), 0.5))
    q = guide.encode(x, y)
    assert q.batch_shape == (5,) and q.event_shape == (3,)
    assert not torch.allclose(q.mean, guide.encode(x, 1 - y).mean)  # depends on y
    assert not torch.allclose(q.mean, guide.encode(x + 1, y).mean)  # and on x
    trace = poutine.trace(guide).get_trace(x, y)
    assert trace.nodes["z"]["value"].shape == (5, 3)


def test_options_defaults_and_the_deterministic_guide():
    guide = build(get_guide("cvae"), {}, fill={"x_dim": 7})
    assert guide.options.y_dim == 7 and type(guide).model_name == "cvae"
    empty = CVAEGuide(x_dim=6, y_dim=4, deterministic=True)
    assert not list(empty.parameters())
    trace = poutine.trace(empty).get_trace(torch.zeros(2, 6), torch.zeros(2, 4))
    assert not latent_sites(trace)
    with pytest.raises(ValueError, match="y_dim"):
        CVAEGuide(x_dim=6, y_dim=-1)
