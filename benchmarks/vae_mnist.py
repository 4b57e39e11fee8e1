"""pyrovae's fit against a hand-written PyTorch VAE, in one process and one run.

Burda et al.'s one-stochastic-layer architecture (784-200-200-50, tanh, Bernoulli) on
dynamically binarized MNIST, same initial weights, batch, optimizer (Adam), epochs and
batch order for both; prints seconds per epoch of each, their ratio, and each one's test
log-likelihood by importance sampling (the plain model's with its own hand-written estimator).

    python benchmarks/vae_mnist.py --data-dir ../shared/data --epochs 5 --num-samples 1000

Not a test: timings are noisy; the ratio is measured within one run.
"""

from __future__ import annotations

import copy
import math
import platform
import tempfile
import time

import torch
import _harness  # benchmarks/_harness.py
import torch.nn.functional as F

import pyrovae
from pyrovae.data.datasets import batches, load_dataset
from pyrovae.training.setup import resolve_device
from pyrovae.training.step import make_optimizer
from pyrovae.guides import DiagNormalGuide
from pyrovae.models import VAE


def plain_elbo(encoder, decoder, x, z_dim, num_samples=1):
    """Per-datapoint log-weights (S, B) of the hand-written VAE."""
    loc, raw_scale = encoder(x).split(z_dim, -1)
    scale = F.softplus(raw_scale) + 1e-5
    eps = torch.randn((num_samples,) + loc.shape, device=x.device)
    z = loc + scale * eps
    logits = decoder(z)
    log_px_z = -F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none").sum(-1)
    log_pz = -0.5 * (z ** 2).sum(-1) - 0.5 * z_dim * math.log(2 * math.pi)
    log_qz = (-0.5 * eps ** 2 - scale.log()).sum(-1) - 0.5 * z_dim * math.log(2 * math.pi)
    return log_px_z + log_pz - log_qz


class PlainTrainer:
    """The hand-written loop: same batches (order and binarization), Adam, sampled ELBO."""

    def __init__(self, encoder, decoder, dataset, batch_size, lr, seed, z_dim, optimizer="same"):
        self.encoder, self.decoder, self.dataset = encoder, decoder, dataset
        self.batch_size, self.seed, self.z_dim = batch_size, seed, z_dim
        params = list(encoder.parameters()) + list(decoder.parameters())
        device = params[0].device
        # "same": the fused Adam that fit uses; "default": torch.optim.Adam(params, lr) as usually written
        self.optimizer = make_optimizer(params, lr, device) if optimizer == "same" else torch.optim.Adam(params, lr=lr)

    def epoch(self, epoch: int) -> float:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        t0 = time.perf_counter()
        for batch in batches(self.dataset.train, self.batch_size, shuffle=True, generator=generator,
                             transform=self.dataset.transform):
            loss = -plain_elbo(self.encoder, self.decoder, batch["x"], self.z_dim).mean()
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
        return time.perf_counter() - t0


@torch.no_grad()
def plain_log_likelihood(encoder, decoder, x, z_dim, num_samples, chunk=100):
    estimates = []
    for start in range(0, len(x), 100):
        xb = x[start:start + 100]
        log_w = torch.cat([plain_elbo(encoder, decoder, xb, z_dim, min(chunk, num_samples - k))
                           for k in range(0, num_samples, chunk)])
        estimates.append(torch.logsumexp(log_w, 0) - math.log(num_samples))
    ll = torch.cat(estimates).double()
    return float(ll.mean()), float(ll.std() / math.sqrt(len(ll)))


def main():
    p = _harness.parser(__doc__, data_dir=None, epochs=5, batch_size=100, lr=1e-3, num_samples=1000,
                        test_size=10000, device="cpu", seed=0, json=None)
    p.add_argument("--plain-optimizer", default="same", choices=["same", "default"],
                   help="the plain loop's Adam: fit's fused one (same) or torch.optim.Adam's defaults")
    args = p.parse_args()

    device = resolve_device(args.device)
    dataset = load_dataset("mnist", data_dir=args.data_dir).to(device)
    z_dim, hidden = 50, (200, 200)
    torch.manual_seed(args.seed)
    model, guide = VAE(784, z_dim, hidden), DiagNormalGuide(784, z_dim, hidden)
    encoder, decoder = copy.deepcopy(guide.encoder).to(device), copy.deepcopy(model.decoder).to(device)

    # Epochs alternate between the two loops (the suite's run is resumed from its run folder each
    # epoch), so background load on a shared machine hits both alike.
    plain = PlainTrainer(encoder, decoder, dataset, args.batch_size, args.lr, args.seed, z_dim, args.plain_optimizer)
    plain_seconds, suite_seconds = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for epoch in range(args.epochs):
            plain_seconds.append(plain.epoch(epoch))
            result = pyrovae.fit(model, guide, dataset, epochs=epoch + 1, batch_size=args.batch_size, lr=args.lr,
                                 seed=args.seed, device=device, progress=False, out_dir=tmp, resume=epoch > 0,
                                 objective="elbo")  # the plain loop's loss: the KL sampled at the one draw
            suite_seconds.append(result.metrics[-1]["seconds"])
            print(f"epoch {epoch + 1}: plain {plain_seconds[-1]:.2f} s, pyrovae {suite_seconds[-1]:.2f} s", flush=True)

    test = {k: v[: args.test_size] for k, v in dataset.test.items()}
    t0 = time.perf_counter()
    suite_ll = pyrovae.log_likelihood(model, guide, test, num_samples=args.num_samples)
    suite_eval = time.perf_counter() - t0
    t0 = time.perf_counter()
    plain_ll, plain_se = plain_log_likelihood(encoder, decoder, test["x"], z_dim, args.num_samples)
    plain_eval = time.perf_counter() - t0

    # the first epoch includes warm-up (allocator, first validation); report the rest when there is a rest
    tail = slice(1, None) if args.epochs > 1 else slice(None)
    suite_epoch = sum(suite_seconds[tail]) / len(suite_seconds[tail])
    plain_epoch = sum(plain_seconds[tail]) / len(plain_seconds[tail])
    steps = math.ceil(len(dataset.train["x"]) / args.batch_size)
    rows = {
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, {device}",
        "epochs": args.epochs, "batch_size": args.batch_size, "steps_per_epoch": steps,
        "plain_optimizer": args.plain_optimizer,
        "plain_seconds_per_epoch": plain_epoch, "suite_seconds_per_epoch": suite_epoch,
        "ratio_suite_over_plain": suite_epoch / plain_epoch,
        "plain_ms_per_step": 1000 * plain_epoch / steps, "suite_ms_per_step": 1000 * suite_epoch / steps,
        "num_samples": args.num_samples, "test_size": len(test["x"]),
        "plain_test_ll": plain_ll, "plain_test_ll_stderr": plain_se, "plain_eval_seconds": plain_eval,
        "suite_test_ll": suite_ll.log_likelihood, "suite_test_ll_stderr": suite_ll.stderr, "suite_eval_seconds": suite_eval,
    }
    print("| | plain PyTorch | pyrovae | ratio |\n|---|---|---|---|")
    print(f"| s/epoch ({steps} steps) | {plain_epoch:.2f} | {suite_epoch:.2f} | {suite_epoch / plain_epoch:.3f} |")
    print(f"| ms/step | {rows['plain_ms_per_step']:.2f} | {rows['suite_ms_per_step']:.2f} | |")
    print(f"| test log-likelihood (K={args.num_samples}, {len(test['x'])} images) | {plain_ll:.2f} ± {plain_se:.2f} | "
          f"{suite_ll.log_likelihood:.2f} ± {suite_ll.stderr:.2f} | |")
    print(f"| evaluation seconds | {plain_eval:.1f} | {suite_eval:.1f} | |")
    print(rows["machine"] + f"; plain optimizer: {args.plain_optimizer}")
    _harness.write_json(args.json, rows)


if __name__ == "__main__":
    main()
