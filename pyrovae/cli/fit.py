"""``pyrovae fit``: fit a model/guide pair with SVI and leave a run folder.

The flags of the model and guide are not listed by hand: they are derived from the chosen
model's and guide's constructor keyword arguments (``z_dim: int = 20`` becomes
``--z-dim``); sizes the data determines (``x_dim``, ``num_classes``) come from the data set.
At its end a fit prints the test log-likelihood at K = ``--eval-samples``, within
``--eval-budget`` of the training time (:mod:`pyrovae.evaluation.bounded`: all test images
where that fits, else a random subset or a smaller K), and saves it as an evaluation file.

    pyrovae fit                                   # VAE on the embedded 8x8 digits
    pyrovae fit --model vae --guide diag --data mnist --objective iwae --particles 5 \\
        --epochs 10 --batch-size 100 --lr 1e-3 --seed 0 --out runs/x
    pyrovae fit --out runs/x --resume             # continue after Ctrl-C, kill or crash
    pyrovae fit --data photos/ --image-size 32    # your own data: a folder of images,
    pyrovae fit --data faces.npy --num-workers 2  # an array file (memory-mapped), or
    pyrovae fit --data mypackage.data:make_dataset  # a function returning a torch Dataset
    pyrovae fit --import mymodule --guide laplace # a guide registered in mymodule.py
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from pathlib import Path
from typing import List

from pyrovae.cli import common
from pyrovae.errors import PyrovaeError, UsageError
from pyrovae.guides.base import model_name_of, objective_for, objective_options_for
from pyrovae.models.base import guide_name_of

HELP = "fit a model/guide pair (default: VAE on the embedded digits)"
PAIR_ERRORS = ("the guide does not match the model", "the first training step failed")  # training/checks.py
EVAL_BUDGET, EVAL_FLOOR = 0.25, 10.0  # the end-of-fit score: a quarter of the training time, at least 10 s


def build_parser(model_name: str, guide_name: str, objective_name: str) -> common.Parser:
    """The flags of ``pyrovae fit``: its own, then those declared by :class:`FitOptions`, the
    objective's ``Options`` and the model's and guide's, each with its help and choices."""
    from pyrovae.registry import get_guide, get_model, get_objective, list_guides, list_models, list_objectives
    from pyrovae.training.setup import FitOptions

    p = common.Parser(prog="pyrovae fit", description="Fit a model/guide pair with SVI.")
    p.add_argument("--model", default=model_name, help=f"one of {list_models()} (default: the guide's model, else vae)")
    p.add_argument("--guide", default=guide_name, help=f"one of {list_guides()} (default: the model's guide, else diag)")
    p.add_argument("--data", default="digits",
                   help="a data set name (default: digits, embedded; see pyrovae list), a folder of PNG/JPEG images "
                        "(class sub-folders give labels), a .npy/.npz array file, or module:function returning a "
                        "torch Dataset; a registered name wins over a path of the same name")
    p.add_argument("--image-size", type=int, default=None, metavar="S",
                   help="a folder of images: resize and centre-crop every image to S x S (needed for mixed sizes)")
    p.add_argument("--color", default=None, choices=["grey", "rgb"],
                   help="a folder of images: read as grey or RGB (default: grey if every image is grey)")
    p.add_argument("--data-dir", default=None, help="folder holding the data files (else $PYROVAE_DATA, standard places)")
    p.add_argument("--binarize", default=None, choices=["dynamic", "static", "none"], help="binary images from grey levels: dynamic (a new draw every batch), static (drawn once) or none; default: the named data set's, none for your own data")
    p.add_argument("--objective", default=None, help=f"one of {list_objectives()} (default: the guide's, else the "
                   f"model's, else elbo; the options listed below are {objective_name}'s: pass --objective NAME "
                   "--help for another's)")
    p.add_argument("--epochs", type=int, default=None,
                   help="total epochs (default: about 3000 steps, at least 10, with --patience a tenth of them)")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--lr", type=float, default=None,
                   help="Adam's learning rate (default: the model's, 1e-3 for most; draw 3e-3)")
    p.add_argument("--seed", type=int, default=0, help="seeds the initial weights, the batches and every draw")
    p.add_argument("--out", default=None, help="run folder (default: runs/DATA-MODEL-GUIDE-TIME)")
    p.add_argument("--eval-samples", type=int, default=100,
                   help="importance samples for the test log-likelihood printed at the end (0: skip)")
    p.add_argument("--eval-budget", type=float, default=EVAL_BUDGET, metavar="F",
                   help=f"the end-of-fit score takes at most F times the training time (at least {EVAL_FLOOR:.0f} s): "
                        f"fewer test images, else a smaller K, where all would not fit (default {EVAL_BUDGET}; "
                        "0: every test image at --eval-samples)")
    common.add_option_flags(p, [FitOptions])  # --resume, --init, --precision, --log-every, ...
    common.add_common_flags(p)
    # the model's own objective options (vrnn's KL warm-up) are their defaults; a resumed run's own win later
    own = {k: (v, f"model {model_name}'s") for k, v in objective_options_for(get_model(model_name), objective_name).items()}
    common.add_option_flags(p.add_argument_group(f"options of objective {objective_name!r}"),
                            [get_objective(objective_name)], dest_prefix="obj_", defaults=own)
    common.add_option_flags(p.add_argument_group(f"options of model {model_name!r} and guide {guide_name!r}"),
                            [get_model(model_name), get_guide(guide_name)], dest_prefix="opt_")
    return p


def main(argv: List[str]) -> int:
    import pyro

    from pyrovae.registry import get_guide, get_model, get_objective, pair_guide
    from pyrovae.training.fit import fit
    from pyrovae.training.setup import FitOptions

    # the pair decides the flags: find it (and import the user's modules) before parsing
    known = common.pre_parse(argv, "--model", "--guide", "--objective", "--out", "--patience")
    saved = common.saved_run_config(known.out) if known.resume and known.out else None
    imports = common.import_modules([*((saved or {}).get("imports") or []), *known.imports])
    if saved:
        check_saved_pair(saved, known.out)
    # the hooks' defaults (the model's own guide, the guide's model and objective): models/base.py, guides/base.py
    guide_name = known.guide or (saved and saved["guide"]["name"]) or guide_name_of(known.model and get_model(known.model))
    model_name = known.model or (saved and saved["model"]["name"]) or model_name_of(get_guide(guide_name))
    if saved:
        check_resume_consistent(saved, known.out, model_name, guide_name)
    model_factory, guide_factory = get_model(model_name), get_guide(guide_name)
    objective_name = known.objective or (saved and (saved.get("objective") or {}).get("name")) or \
        objective_for(model_factory, guide_factory)
    get_objective(objective_name)
    parser = build_parser(model_name, guide_name, objective_name)
    if saved:  # a resumed run keeps its options unless they are given again
        parser.set_defaults(**defaults_from_saved(saved, objective_name))
    args = parser.parse_args(argv)
    check_numbers(args)
    if saved:
        check_epochs_left(saved, known.out, args.epochs)
    opts = {k[4:]: v for k, v in vars(args).items() if k.startswith("opt_") and v is not None}
    device = common.resolve_device(args.device)
    common.check_data_dir(args.data_dir)
    if args.num_workers < 0:
        raise UsageError(f"--num-workers must be >= 0, got {args.num_workers}")
    if args.image_size is not None and args.image_size < 1:
        raise UsageError(f"--image-size must be >= 1, got {args.image_size}")

    dataset = common.load_data(args.data, args.data_dir, args.binarize, args.image_size, args.color)
    pyro.set_rng_seed(args.seed)  # before any module is built: the same seed gives the same initial weights
    model = common.build_with_flags(model_factory, common.options_for(model_factory, opts),
                                    common.fill_for(model_factory, dataset.dims()))
    guide = common.build_with_flags(guide_factory, common.options_for(guide_factory, opts),
                                    common.fill_for(guide_factory, dataset.dims()))
    pair_guide(model, guide)  # a guide that reads its model (ladder) gets it
    objective = objective_from_args(args, objective_name)
    check_objective_fits(objective, guide_name, guide, common.split_rows(dataset, "train", 2))
    threads = common.set_threads(args.threads, common.linear_flops(model, guide))
    if args.epochs is None:
        rows = _num_rows(dataset.train)
        args.epochs = max(10, -(-3000 // -(-rows // args.batch_size))) if rows else 10
        if known.patience is None:  # 3000 steps are far past where a few hundred rows overfit
            args.patience = default_patience(args.epochs)
    out = Path(args.out) if args.out else Path("runs") / f"{_slug(dataset.name)}-{model_name}-{guide_name}-{time.strftime('%Y%m%d-%H%M%S')}"
    config = {"data_dir": str(Path(args.data_dir).resolve()) if args.data_dir else None, "imports": imports,
              "threads": threads}
    if not isinstance(dataset.train, dict):  # read from a path
        config["num_workers"] = args.num_workers
    options = FitOptions(**{name: getattr(args, name) for name in common.option_flags([FitOptions])},
                         device=device, config=config)
    t0 = time.perf_counter()
    try:
        result = fit(model, guide, dataset, objective=objective, epochs=args.epochs, batch_size=args.batch_size,
                     lr=args.lr, seed=args.seed, out_dir=out, options=options)
    except KeyboardInterrupt:
        print(interrupted_message(out), file=sys.stderr)
        return 130
    except PyrovaeError as error:  # a guide named that is not the model's own: say which is
        own = guide_name_of(model_factory)
        if known.guide and own != guide_name and str(error).startswith(PAIR_ERRORS):
            raise type(error)(f"{error}; model {model_name!r} pairs with guide {own!r}: drop --guide "
                              f"{guide_name} to use it") from None
        raise
    if os.environ.get("RANK", "0") != "0":  # a data-parallel run (torchrun): rank 0 reports
        return 0
    try:
        report(result, out, model, guide, dataset, args, time.perf_counter() - t0)
    except KeyboardInterrupt:  # the figures or the end-of-fit score: the run itself is complete
        done = result.metrics[-1]["epoch"]
        print(f"interrupted after the fit ended: {out} holds the finished run ({done} epoch{'s' if done != 1 else ''}); "
              f"score it with: pyrovae evaluate {shlex.quote(str(out))} --num-samples {args.eval_samples or 100}",
              file=sys.stderr)
        return 130
    return 0


def report(result, out: Path, model, guide, dataset, args, fit_seconds: float = 0.0) -> None:
    """Figures, and the lines a fit prints at its end."""
    from pyrovae.evaluation.plots import save_run_figures

    device = next((p.device for m in (model, guide) if hasattr(m, "parameters") for p in m.parameters()), "cpu")
    dataset = dataset.to(device)
    test = common.split_rows(dataset, "test", None if isinstance(dataset.test, dict) else 64)
    # fit() drew them already (FitOptions.figures): drawn again they cost a CPU second for nothing
    figures = result.figures or save_run_figures(out, model, guide, result.metrics, test, dataset.image_shape)
    last = result.metrics[-1]
    print(f"run folder: {out}")
    if not isinstance(dataset.test, dict):  # read from a path: say how
        print(result.data_mode)
    valid = f", validation ELBO {last['valid_elbo']:.3f} nats" if "valid_elbo" in last else ""
    # fit() said when and why it stopped early (stderr, as it happened); the summary says it in a word
    stopped = f" of {args.epochs} asked, stopped early (--patience {args.patience})" if result.stopped_early else ""
    print(f"epochs: {last['epoch']}{stopped}, final train loss {last['train_loss']:.3f}{valid}")
    best = result.best
    if best is not None and result.weights_epoch != last["epoch"]:
        print(f"kept the weights of epoch {best['epoch']}, the best validation ELBO ({best['valid_elbo']:.3f} nats): "
              "the score, figures, evaluate and sample use them (--weights last reads the last epoch's; "
              "--no-keep-best keeps the last)")
    if args.eval_samples > 0:
        score_test(model, guide, dataset, out, args, fit_seconds, device, result.metrics)
    for line in getattr(guide, "report_lines", lambda data: [])(test):  # what the pair reports of itself (M2's test error)
        print(line)
    print("figures: " + ", ".join(p.name for p in figures))
    if getattr(model, "sequential_sampling", False):
        print(f"samples: drawn pixel by pixel (one network pass per pixel, slow on a CPU): run "
              f"`pyrovae sample {shlex.quote(str(out))} --n 16`")


def score_test(model, guide, dataset, out: Path, args, fit_seconds: float, device, metrics) -> None:
    """The end-of-fit test score within ``--eval-budget`` of the training time: printed with
    what it scored, and saved as ``evaluation-test-K{K}[-random{N}].json``."""
    import torch

    from pyrovae.cli.evaluate import write_result
    from pyrovae.evaluation.bounded import bounded_log_likelihood, datapoint_noun, rows_of
    from pyrovae.infer.importance import preserved_rng

    budget = max(EVAL_FLOOR, args.eval_budget * fit_seconds) if args.eval_budget > 0 else float("inf")
    progress = sys.stderr.isatty() if args.progress is None else args.progress

    def announce(n, k, total, expected):
        if args.progress is not False and expected > 2:
            print(f"test log-likelihood: {n} of {total} {noun} at K={k}, about {expected:.0f} s", file=sys.stderr,
                  flush=True)

    data, noun = dataset.test, datapoint_noun(dataset)
    with preserved_rng():  # its own random stream, seeded by --seed: the same score whatever ran before it
        torch.manual_seed(args.seed)
        score = bounded_log_likelihood(model, guide, data, args.eval_samples, budget, progress=progress,
                                       device=device, on_plan=announce, noun=noun)
    est, k = score.estimate, score.estimate.num_samples
    name = f"evaluation-test-K{k}" + ("" if score.complete else f"-random{len(score.rows)}") + ".json"
    result = {**score.as_dict(), "split": "test", "limit": None, "run": str(out),
              "data": getattr(dataset, "name", None), "epoch": metrics[-1]["epoch"], "epochs": args.epochs,
              "source": "pyrovae fit"}
    write_result(out / name, result, est.per_datapoint, rows_of(data, score.rows, device))
    print(f"test log-likelihood (K={k}): {est.log_likelihood:.3f} ± {est.stderr:.3f} nats (ELBO {est.elbo:.3f}) on "
          f"{score.describe()}, {score.seconds:.1f} s; for the final figure run "
          f"`pyrovae evaluate {shlex.quote(str(out))} --num-samples 5000`")


def _num_rows(data):
    try:
        return len(next(iter(data.values()))) if isinstance(data, dict) else len(data)
    except TypeError:  # an iterable dataset without a length
        return None


def _slug(name: str) -> str:
    """A file-name-safe form of a data set name, a path's last part or ``module:function``."""
    base = Path(str(name).rstrip("/")).name or "data"
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in base)


def interrupted_message(out: Path) -> str:
    """Where an interrupted fit left its last checkpoint, and the command that resumes it."""
    from pyrovae.training.run_folder import CHECKPOINT_FILE, read_metrics

    checkpoint = out / CHECKPOINT_FILE
    if not checkpoint.is_file():
        return (f"interrupted before the first checkpoint (the first epoch's end, or a minute into it): none in {out}; "
                "start the fit again")
    epoch = _checkpoint_position(checkpoint, read_metrics(out))
    return (f"interrupted; the last checkpoint is {checkpoint}{epoch}. "
            f"Resume with: pyrovae fit --out {shlex.quote(str(out))} --resume")


def _checkpoint_position(checkpoint: Path, metrics) -> str:
    """`` (after epoch 3)``, or `` (within epoch 4, after 1200 steps)`` for a checkpoint saved within an epoch."""
    from pyrovae.training.checkpoint import load_checkpoint

    try:
        state = load_checkpoint(checkpoint)
        position = state.get("position") or {}
        if position.get("batch"):
            return f" (within epoch {int(position['epoch']) + 1}, after {int(state['step'])} steps)"
        return f" (after epoch {int(state['epoch'])})"
    except Exception:  # a damaged file: what the metrics say (resume falls back to the previous checkpoint)
        return f" (after epoch {metrics[-1]['epoch']})" if metrics else ""


def objective_from_args(args, name: str):
    """The objective ``name`` built with its flags' values (stored as ``obj_OPTION``)."""
    from pyrovae.registry import get_objective

    options = {k[4:]: v for k, v in vars(args).items() if k.startswith("obj_") and v is not None}
    return common.build_with_flags(get_objective(name), common.options_for(get_objective(name), options), fill={})


def check_objective_fits(objective, guide_name: str, guide, train: dict) -> None:
    """:class:`UsageError` before training when the objective cannot use the guide: an
    analytic-KL objective (``meanfield``, Pyro's ``TraceMeanField_ELBO``) needs every latent
    site of the guide fully reparameterized, with no score-function term (a von Mises-Fisher
    sampled by rejection has one)."""
    import pyro
    import torch
    from pyro import poutine
    from pyro.infer.util import is_identically_zero

    from pyrovae.infer.importance import bind_batch, latent_sites
    from pyrovae.infer.objectives import MeanFieldELBO

    if not isinstance(objective, MeanFieldELBO):
        return
    batch = {k: v[:2] for k, v in train.items()}
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        state = pyro.util.get_rng_state()
        trace = poutine.trace(bind_batch(guide, batch)).get_trace(**batch)
        pyro.util.set_rng_state(state)
        for site in latent_sites(trace):
            name, fn = site["name"], site["fn"]
            reparameterized = fn.has_rsample and is_identically_zero(fn.score_parts(site["value"]).score_function)
            if not reparameterized:
                raise UsageError(
                    f"--objective {objective.name} needs a fully reparameterized guide (analytic KL, "
                    f"TraceMeanField_ELBO), but guide {guide_name!r} samples site {name!r} from "
                    f"{type(fn).__name__} with a score-function term; use --objective elbo (or iwae)")


def default_patience(epochs: int) -> int:
    """``--patience`` where neither it nor ``--epochs`` is given: a tenth of the default
    epochs, at least 10. The default 3000 steps are 1000 epochs of the 213 training chorales,
    where the VRNN's validation ELBO (without its KL warm-up) peaks at epoch 170 and falls 740
    nats by epoch 1000: with 100 it stops at 270 (a quarter of the time) with the same best
    weights (with the warm-up: at 460, best 360); MNIST's 10 default epochs cannot stop early,
    nor did the digits' 250 (25). Measured:
    docs/runs.md#the-best-validation-weights.

    >>> default_patience(10), default_patience(250), default_patience(1000)
    (10, 25, 100)
    """
    return max(10, epochs // 10)


def check_numbers(args) -> None:
    """:class:`UsageError` naming the flag for a count or rate out of range, before the data is
    read (``--batch-size 0`` used to end in a ZeroDivisionError traceback)."""
    import math

    for flag, value in (("--epochs", args.epochs), ("--batch-size", args.batch_size)):
        if value is not None and value < 1:
            raise UsageError(f"{flag} must be a positive integer, got {value}")
    if args.lr is not None and not (math.isfinite(args.lr) and args.lr > 0):
        raise UsageError(f"--lr must be a positive number, got {args.lr:g}")
    for flag, value in (("--eval-samples", args.eval_samples), ("--eval-budget", args.eval_budget)):
        if not value >= 0:
            raise UsageError(f"{flag} must be >= 0 (0: {'skip the score' if flag == '--eval-samples' else 'no limit'}), "
                             f"got {value:g}")


def check_epochs_left(saved: dict, out, epochs: int) -> None:
    """:class:`UsageError` for ``--resume`` of a run that has already trained ``--epochs``
    epochs (or more): it used to print the finished run's lines again as if it had trained,
    re-score it over its end-of-fit file and record the smaller ``--epochs`` in run.json."""
    done = ((saved.get("segments") or [{}])[-1]).get("completed_epoch")
    if done is None or epochs > done:
        return
    where = shlex.quote(str(out))
    if epochs == done:
        raise UsageError(f"{out} has finished its {done} epochs: nothing to train; pass --epochs N (more than {done}) "
                         f"to train it further, or read it as it is (pyrovae evaluate {where})")
    raise UsageError(f"cannot resume {out} with --epochs {epochs}: it has finished {done} epochs already; pass --epochs N "
                     f"(more than {done}) to train it further")


def check_saved_pair(saved: dict, out) -> None:
    """:class:`UsageError` before ``--resume`` of a run whose pair cannot be rebuilt here: a
    plain-function pair (fit from Python), or a registered class whose module is not imported."""
    from pyrovae.registry import get_guide, get_model, import_hint

    for role, get in (("model", get_model), ("guide", get_guide)):
        spec = saved.get(role)
        if spec is None:
            raise UsageError(f"the run in {out} was fit from Python with a {role} that is not a registered class; "
                             "resume it from Python: fit(model, guide, data, out_dir=..., resume=True)")
        try:
            get(spec["name"])
        except ValueError:
            raise UsageError(f"the run in {out} used {role} {spec['name']!r}, which is not registered here; "
                             f"{import_hint(spec)}") from None


def check_resume_consistent(saved: dict, out, model_name: str, guide_name: str) -> None:
    for role, name in (("model", model_name), ("guide", guide_name)):
        if saved.get(role) and saved[role]["name"] != name:
            raise UsageError(f"the run in {out} used {role} {saved[role]['name']!r}, not {name!r}; "
                             f"drop --{role} to resume it, or choose another --out")


def defaults_from_saved(saved: dict, objective_name: str) -> dict:
    """The parser defaults that make ``--resume`` continue the run as it was started."""
    from pyrovae.registry import get_guide, get_model, saved_options

    defaults = {}
    for role, get in (("model", get_model), ("guide", get_guide)):
        spec = saved.get(role) or {}
        for k, v in (saved_options(get(spec["name"]), spec["options"]) if spec else {}).items():
            defaults[f"opt_{k}"] = v
    data = saved.get("data") or {}
    defaults.update(data=data.get("name"), binarize=data.get("binarize"), data_dir=saved.get("data_dir"),
                    threads=saved.get("threads"))
    files_options = (data.get("files") or {}).get("options") or {}
    if (data.get("files") or {}).get("kind") == "images":  # read the folder as it was read
        defaults.update(image_size=files_options.get("image_size"), color=files_options.get("color"))
    if saved.get("num_workers") is not None:
        defaults["num_workers"] = saved["num_workers"]
    fit_cfg = saved.get("fit") or {}
    for k in ("epochs", "batch_size", "lr", "seed", "precision", "keep_best", "patience"):
        if k in fit_cfg:
            defaults[k] = fit_cfg[k]
    obj = saved.get("objective") or {}
    if obj.get("name") == objective_name:  # its options carry over; another objective starts from its defaults
        defaults.update({f"obj_{k}": v for k, v in obj.items() if k != "name"})
    return {k: v for k, v in defaults.items() if v is not None}
