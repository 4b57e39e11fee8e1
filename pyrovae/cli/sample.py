"""``pyrovae sample RUN``: a PNG grid of samples :math:`x \\sim p(x)` from a run's model.

The samples come from the model's own generative process
(:func:`~pyrovae.evaluation.sampling.prior_samples`): z ~ p(z) then the mean of p(x | z) for
a decoder whose pixels are independent given z, pixel after pixel for an autoregressive
decoder (``pixelcnn-vae``); no data set is read. A model that cannot draw x ~ p(x) on its own
says why in one line. The grid is saved as ``RUN/samples-{N}-seed{SEED}.png`` (or ``--out``); an existing file is
kept unless ``--force``.

    pyrovae sample runs/x --n 64 --seed 1
"""

from __future__ import annotations

from pathlib import Path
from typing import List

from pyrovae.cli import common
from pyrovae.errors import UsageError

HELP = "PNG grid of samples from a run's model"


def main(argv: List[str]) -> int:
    import pyro

    from pyrovae.evaluation.plots import is_image_shape, save_samples
    from pyrovae.evaluation.sampling import check_can_sample

    p = common.Parser(prog="pyrovae sample", description="Write a PNG grid of samples x ~ p(x).")
    p.add_argument("run", help="run folder written by pyrovae fit")
    p.add_argument("--n", type=int, default=64, help="number of samples (default 64)")
    p.add_argument("--out", default=None, help="PNG path (default: RUN/samples-N-seedSEED.png)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--force", action="store_true", help="replace an existing PNG")
    common.add_common_flags(p)
    common.add_weights_flag(p)
    args = p.parse_args(argv)
    if args.n < 1:
        raise UsageError(f"--n must be >= 1, got {args.n}")
    saved = common.require_run(args.run)
    last = "-last" if args.weights == "last" else ""
    out = Path(args.out) if args.out else Path(args.run) / f"samples-{args.n}-seed{args.seed}{last}.png"
    common.refuse_overwrite(out, args.force, other_name=True)
    run, dataset, device = common.load_run(args, saved)
    check_can_sample(run.model, like=dataset.test)  # one line naming why not
    if not is_image_shape(dataset.image_shape):
        raise UsageError(f"pyrovae sample draws an image grid, and data {saved.get('data')!r} has shape "
                         f"{dataset.image_shape}, not an image; draw samples from Python "
                         f"(pyrovae.evaluation.sampling.prior_samples(run.model, N))")
    common.set_threads(args.threads, common.linear_flops(run.model, run.guide))
    pyro.set_rng_seed(args.seed)  # after loading: the draws depend on the seed alone
    common.write_public(out, lambda tmp: save_samples(run.model, args.n, dataset.image_shape, tmp, like=dataset.test))
    print(out)
    return 0
