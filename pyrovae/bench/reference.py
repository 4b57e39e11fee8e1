"""Hand-written PyTorch references for ``pyrovae bench``: the same networks, no Pyro.

The suite's VAE (``models/vae.py``) with the diagonal (``guides/diag.py``) or the IAF guide
(``guides/iaf.py``), trained as one would write it by hand in PyTorch: the encoder and
decoder modules called directly, the noise drawn with ``torch.randn``, the densities written
out (``log q`` from the noise, the Bernoulli likelihood as ``binary_cross_entropy_with_logits``),
all K particles in one batched pass:

.. math:: \\log w_k = \\log p(x \\mid z_k) + \\log \\mathcal N(z_k; 0, I) - \\log q(z_k \\mid x),
          \\qquad \\mathcal L_{\\mathrm{IWAE}} = \\log \\tfrac1K \\textstyle\\sum_k w_k.

For the IAF guide the same Pyro ``ConditionalAutoRegressiveNN`` modules are called directly in
the stable gated update of Kingma et al. (2016), :math:`z \\leftarrow \\sigma z + (1-\\sigma) m`,
:math:`\\log q \\mathrel{-}= \\sum \\log \\sigma`, with the order reversed between steps.

>>> import torch
>>> from pyrovae.models import VAE
>>> from pyrovae.guides import DiagNormalGuide
>>> plain = PlainVAE(VAE(6, 2, (8,)), DiagNormalGuide(6, 2, (8,)))
>>> plain.log_weights(torch.zeros(3, 6), num_particles=4).shape
torch.Size([4, 3])

References

[1] Burda, Grosse, Salakhutdinov. Importance Weighted Autoencoders. arXiv:1509.00519
[2] Kingma et al. Improving Variational Inference with Inverse Autoregressive Flow. arXiv:1606.04934
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F

HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


class PlainVAE(torch.nn.Module):
    """Copies of a suite pair's networks, with a hand-written loss.

    :param model: a :class:`~pyrovae.models.VAE` with a Bernoulli likelihood.
    :param guide: a :class:`~pyrovae.guides.DiagNormalGuide` or :class:`~pyrovae.guides.IAFGuide`.
    """

    def __init__(self, model, guide):
        super().__init__()
        if getattr(model, "likelihood_name", None) != "bernoulli":
            raise ValueError("the plain reference is written for the Bernoulli VAE")
        self.z_dim = model.z_dim
        self.decoder = copy.deepcopy(model.decoder)
        self.encoder = copy.deepcopy(guide.encoder)
        self.flows = copy.deepcopy(getattr(guide, "flows", torch.nn.ModuleList()))
        self.context_dim = getattr(guide, "context_dim", 0) if len(self.flows) else 0
        self.sigmoid_bias = getattr(guide, "flow_options", {}).get("sigmoid_bias", 2.0)

    def encode(self, x, num_particles):
        """``z`` (K, B, z_dim) and ``log q(z | x)`` (K, B)."""
        sizes = [self.z_dim, self.z_dim] + ([self.context_dim] if self.context_dim else [])
        loc, raw_scale, *context = self.encoder(x).split(sizes, dim=-1)
        scale = F.softplus(raw_scale) + 1e-5
        eps = torch.randn((num_particles,) + loc.shape, device=x.device, dtype=loc.dtype)
        z = loc + scale * eps
        log_q = -(0.5 * eps ** 2 + scale.log() + HALF_LOG_2PI).sum(-1)
        for t, flow in enumerate(self.flows):
            if t > 0:
                z = z.flip(-1)
            mean, logit = flow.nn(z, context=context[0].expand(z.shape[:-1] + (self.context_dim,)))
            logit = logit + self.sigmoid_bias
            gate = torch.sigmoid(logit)
            z = gate * z + (1 - gate) * mean
            log_q = log_q - F.logsigmoid(logit).sum(-1)
        return z, log_q, (loc, scale)

    def log_weights(self, x, num_particles=1):
        """``log p(x, z_k) - log q(z_k | x)``, shape (K, B)."""
        z, log_q, _ = self.encode(x, num_particles)
        logits = self.decoder(z)
        log_px = -F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none").sum(-1)
        log_pz = -(0.5 * z ** 2 + HALF_LOG_2PI).sum(-1)
        return log_px + log_pz - log_q

    def loss(self, x, objective: str = "elbo", num_particles: int = 1):
        """The negative bound per datapoint: ``elbo``, ``meanfield`` (analytic KL for the
        diagonal guide), or ``iwae``."""
        if objective == "iwae":
            log_w = self.log_weights(x, num_particles)
            return -(torch.logsumexp(log_w, 0) - math.log(num_particles)).mean()
        if objective == "meanfield" and not len(self.flows):
            z, _, (loc, scale) = self.encode(x, 1)
            logits = self.decoder(z[0])
            log_px = -F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)
            kl = (0.5 * (loc ** 2 + scale ** 2) - scale.log() - 0.5).sum(-1)
            return -(log_px - kl).mean()
        return -self.log_weights(x, 1).mean()
