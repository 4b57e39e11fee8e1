"""The ``pyrovae`` command: fit, evaluate, sample (and more subcommands registered below).

Model and guide options are not listed by hand: the flags of ``pyrovae fit`` are derived
from the chosen model's and guide's constructor keyword arguments and their type hints
(``z_dim: int = 20`` becomes ``--z-dim``; a name shared by both sets both). Sizes that the
data determines (``x_dim``, ``num_classes``) are filled in from the data set.

    pyrovae fit                                   # VAE on the embedded 8x8 digits
    pyrovae fit --model vae --guide diag --data mnist --objective iwae --particles 5 \\
        --epochs 10 --batch-size 100 --lr 1e-3 --seed 0 --device auto --out runs/x
    pyrovae fit --out runs/x --resume --epochs 20
    pyrovae evaluate runs/x --num-samples 5000 --json
    pyrovae sample runs/x --n 64
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import typing
from pathlib import Path
from typing import Callable, Dict, List, Optional

COMMANDS: Dict[str, tuple] = {}
DATA_FILLED = ("x_dim", "num_classes")


def command(name: str, help: str):
    """Register ``handler(argv) -> exit code`` as ``pyrovae NAME``."""

    def decorator(handler: Callable) -> Callable:
        COMMANDS[name] = (handler, help)
        return handler

    return decorator


# ---------------------------------------------------------------- flags from constructors


def _flag_kwargs(name: str, annotation, default) -> dict:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Union and type(None) in args:
        inner = [a for a in args if a is not type(None)]
        annotation = inner[0] if len(inner) == 1 else str
        origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is bool:
        return {"action": argparse.BooleanOptionalAction, "default": default}
    if origin in (tuple, list, typing.Tuple, typing.List):
        item = args[0] if args else int
        return {"nargs": "*", "type": item, "default": default, "metavar": name.upper()}
    if annotation in (int, float, str):
        return {"type": annotation, "default": default, "metavar": name.upper()}
    return {"type": str, "default": default, "metavar": name.upper()}


def option_flags(factories: List[Callable]) -> Dict[str, dict]:
    """``{option_name: argparse kwargs}`` for the constructor options of ``factories``."""
    from pyrovae.registry import constructor_options

    flags: Dict[str, dict] = {}
    for factory in factories:
        target = factory.__init__ if isinstance(factory, type) else factory
        hints = typing.get_type_hints(target)
        for name, param in constructor_options(factory).items():
            if name in DATA_FILLED or name in flags or name == "kwargs":
                continue
            default = None if param.default is param.empty else param.default
            flags[name] = _flag_kwargs(name, hints.get(name, type(default) if default is not None else str), default)
            flags[name]["help"] = f"{getattr(factory, 'registry_name', factory.__name__)} option (default: {default})"
    return flags


def _options_for(factory, values: dict) -> dict:
    from pyrovae.registry import constructor_options

    accepted = constructor_options(factory)
    return {k: (tuple(v) if isinstance(v, list) else v) for k, v in values.items() if k in accepted}


# ---------------------------------------------------------------- fit


OBJECTIVE_FLAGS = {"num_particles", "alpha", "beta", "warmup_steps", "particle_chunk"}  # flags of their own


def _fit_parser(model_name: str, guide_name: str, objective_name: str) -> argparse.ArgumentParser:
    from pyrovae.registry import get_guide, get_model, get_objective, list_guides, list_models, list_objectives

    p = argparse.ArgumentParser(prog="pyrovae fit", description="Fit a model/guide pair with SVI.")
    p.add_argument("--model", default=model_name, help=f"one of {list_models()} (default: the guide's model, else vae)")
    p.add_argument("--guide", default="diag", help=f"one of {list_guides()} (default: diag)")
    p.add_argument("--data", default="digits", help="data set name (default: digits, embedded)")
    p.add_argument("--data-dir", default=None, help="folder holding the data files (else $PYROVAE_DATA, standard places)")
    p.add_argument("--binarize", default=None, choices=["dynamic", "static", "none"], help="override the data set's default")
    p.add_argument("--objective", default=None, help=f"one of {list_objectives()} (default: the guide's, else elbo)")
    p.add_argument("--particles", type=int, default=None, help="particles K for elbo/iwae/renyi")
    p.add_argument("--alpha", type=float, default=None, help="Renyi alpha (objective renyi)")
    p.add_argument("--beta", type=float, default=1.0, help="KL weight (beta-VAE); default 1")
    p.add_argument("--kl-warmup", type=int, default=0, help="linear KL warm-up over this many steps")
    p.add_argument("--epochs", type=int, default=None,
                   help="total epochs (default: enough for about 3000 steps, at least 10)")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--out", default=None, help="run folder (default: runs/DATA-MODEL-GUIDE-TIME)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--eval-samples", type=int, default=100,
                   help="importance samples for the test log-likelihood printed at the end (0: skip)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"],
                   help="bf16: the forward pass under bfloat16 autocast (GPUs; default fp32)")
    p.add_argument("--particle-chunk", type=int, default=None,
                   help="iwae/renyi: particles per chunk, recomputed in the backward pass (memory)")
    group = p.add_argument_group(f"options of model {model_name!r} and guide {guide_name!r}")
    factories = [get_model(model_name), get_guide(guide_name)]
    for name, kwargs in option_flags(factories).items():
        group.add_argument("--" + name.replace("_", "-"), dest=f"opt_{name}", **kwargs)
    extra = {k: v for k, v in option_flags([get_objective(objective_name)]).items() if k not in OBJECTIVE_FLAGS}
    if extra:
        group = p.add_argument_group(f"options of objective {objective_name!r}")
        for name, kwargs in extra.items():
            group.add_argument("--" + name.replace("_", "-"), dest=f"obj_{name}", **kwargs)
    return p


def _objective_from_args(args, guide_factory):
    from pyrovae.registry import build, get_objective

    name = args.objective or getattr(guide_factory, "objective_name", "elbo")
    options = {"beta": args.beta, "warmup_steps": args.kl_warmup}
    if args.particles is not None:
        options["num_particles"] = args.particles
    if args.alpha is not None:
        options["alpha"] = args.alpha
    if getattr(args, "particle_chunk", None) is not None:
        options["particle_chunk"] = args.particle_chunk
    options.update({k[4:]: v for k, v in vars(args).items() if k.startswith("obj_") and v is not None})
    return build(get_objective(name), options)


@command("fit", "fit a model/guide pair (default: VAE on the embedded digits)")
def cmd_fit(argv: List[str]) -> int:
    from pyrovae.data.datasets import load_dataset
    from pyrovae.evaluation.log_likelihood import log_likelihood
    from pyrovae.evaluation.plots import save_run_figures
    from pyrovae.registry import build, get_guide, get_model
    from pyrovae.training.fit import fit

    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--model", default=None)
    pre.add_argument("--guide", default=None)
    pre.add_argument("--objective", default=None)
    pre.add_argument("--out", default=None)
    pre.add_argument("--resume", action="store_true")
    known, _ = pre.parse_known_args(argv)
    saved = _saved_config(known.out) if known.resume and known.out else None
    guide_name = known.guide or (saved and saved["guide"]["name"]) or "diag"
    try:  # a guide names the model it belongs with (vmf -> svae); else the VAE
        default_model = getattr(get_guide(guide_name), "model_name", "vae")
    except ValueError as error:
        raise SystemExit(f"pyrovae fit: {error}")
    model_name = known.model or (saved and saved["model"]["name"]) or default_model
    if saved:
        _check_resume_consistent(saved, known, model_name, guide_name)
    try:
        model_factory, guide_factory = get_model(model_name), get_guide(guide_name)
    except ValueError as error:
        raise SystemExit(f"pyrovae fit: {error}")
    objective_name = known.objective or (saved and (saved.get("objective") or {}).get("name")) or \
        getattr(guide_factory, "objective_name", "elbo")
    try:
        parser = _fit_parser(model_name, guide_name, objective_name)
    except ValueError as error:
        raise SystemExit(f"pyrovae fit: {error}")
    if saved:  # a resumed run keeps its options unless they are given again
        parser.set_defaults(**_defaults_from_saved(saved))
    args = parser.parse_args(argv)
    opts = {k[4:]: v for k, v in vars(args).items() if k.startswith("opt_") and v is not None}

    dataset = load_dataset(args.data, data_dir=args.data_dir, binarize=args.binarize)
    model = build(model_factory, _options_for(model_factory, opts), fill=dataset.dims())
    guide = build(guide_factory, _options_for(guide_factory, opts), fill=dataset.dims())
    objective = _objective_from_args(args, guide_factory)
    if args.epochs is None:
        rows = next(iter(dataset.train.values())).shape[0]
        args.epochs = max(10, -(-3000 // -(-rows // args.batch_size)))
    out = Path(args.out) if args.out else Path("runs") / f"{args.data}-{model_name}-{guide_name}-{time.strftime('%Y%m%d-%H%M%S')}"
    config = {"data_dir": str(Path(args.data_dir).resolve()) if args.data_dir else None}
    result = fit(model, guide, dataset, objective=objective, epochs=args.epochs, batch_size=args.batch_size,
                 lr=args.lr, device=args.device, seed=args.seed, out_dir=out, resume=args.resume,
                 progress=args.progress, config=config, precision=args.precision)
    if os.environ.get("RANK", "0") != "0":  # a data-parallel run (torchrun): rank 0 reports
        return 0
    test = {k: v.to(next(iter(result.dataset.train.values())).device) for k, v in dataset.test.items()}
    figures = save_run_figures(out, model, guide, result.metrics, test, dataset.image_shape)
    last = result.metrics[-1]
    print(f"run folder: {out}")
    print(f"epochs: {last['epoch']}, final train loss {last['train_loss']:.3f}, "
          f"validation ELBO {last.get('valid_elbo', float('nan')):.3f} nats")
    if args.eval_samples > 0:
        est = log_likelihood(model, guide, test, num_samples=args.eval_samples)
        print(f"test log-likelihood (K={args.eval_samples}): {est.log_likelihood:.3f} ± {est.stderr:.3f} nats "
              f"(ELBO {est.elbo:.3f}); for the final figure run `pyrovae evaluate {out} --num-samples 5000`")
    print("figures: " + ", ".join(p.name for p in figures))
    return 0


def _saved_config(out) -> Optional[dict]:
    path = Path(out) / "run.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _check_resume_consistent(saved, known, model_name, guide_name):
    for role, name in (("model", model_name), ("guide", guide_name)):
        if saved.get(role) and saved[role]["name"] != name:
            raise SystemExit(f"pyrovae fit: the run in {known.out} used {role} {saved[role]['name']!r}, not {name!r}")


def _defaults_from_saved(saved: dict) -> dict:
    defaults = {}
    for role in ("model", "guide"):
        for k, v in (saved.get(role) or {}).get("options", {}).items():
            defaults[f"opt_{k}"] = v
    data = saved.get("data") or {}
    defaults.update(data=data.get("name"), binarize=data.get("binarize"), data_dir=saved.get("data_dir"))
    fit_cfg = saved.get("fit") or {}
    for k in ("batch_size", "lr", "seed"):
        if k in fit_cfg:
            defaults[k] = fit_cfg[k]
    obj = saved.get("objective") or {}
    defaults.update(objective=obj.get("name"), particles=obj.get("num_particles"), alpha=obj.get("alpha"),
                    particle_chunk=obj.get("particle_chunk"),
                    beta=obj.get("beta", 1.0), kl_warmup=obj.get("warmup_steps", 0))
    defaults.update({f"obj_{k}": v for k, v in obj.items() if k not in OBJECTIVE_FLAGS and k != "name"})
    return {k: v for k, v in defaults.items() if v is not None}


# ---------------------------------------------------------------- evaluate / sample


def _load(args):
    from pyrovae.training.run_folder import load_run
    from pyrovae.training.fit import resolve_device

    device = resolve_device(args.device)
    return load_run(args.run, device=device), device


def _run_data(run, args, device):
    from pyrovae.data.datasets import load_dataset

    name = run.data_name
    if name is None:
        raise SystemExit(f"pyrovae: {run.path} was fit on tensors, not a named data set; use the Python API")
    data_dir = args.data_dir or run.config.get("data_dir")
    return load_dataset(name, data_dir=data_dir, binarize=(run.config.get("data") or {}).get("binarize")).to(device)


@command("evaluate", "importance-sampled log-likelihood of a run")
def cmd_evaluate(argv: List[str]) -> int:
    from pyrovae.evaluation.log_likelihood import log_likelihood
    from pyrovae.training.run_folder import write_json

    p = argparse.ArgumentParser(prog="pyrovae evaluate", description="Importance-sampled test log-likelihood of a run.")
    p.add_argument("run", help="run folder written by pyrovae fit")
    p.add_argument("--num-samples", type=int, default=5000, help="importance samples K per datapoint (default 5000)")
    p.add_argument("--split", default="test", choices=["train", "valid", "test"])
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N datapoints")
    p.add_argument("--device", default="auto")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    _add_ais_flags(p)
    args = p.parse_args(argv)
    run, device = _load(args)
    data = getattr(_run_data(run, args, device), args.split)
    if args.limit:
        data = {k: v[: args.limit] for k, v in data.items()}
    t0 = time.perf_counter()
    est = log_likelihood(run.model, run.guide, data, num_samples=args.num_samples, batch_size=args.batch_size,
                         progress=not args.json and sys.stderr.isatty())
    result = {**est.as_dict(), "split": args.split, "seconds": time.perf_counter() - t0, "run": str(run.path)}
    if args.ais:
        result["ais"] = _ais_result(run, data, args)
    write_json(run.path / f"evaluation-{args.split}-K{args.num_samples}.json", result)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{args.split} log-likelihood (K={args.num_samples}, {result['num_datapoints']} datapoints): "
              f"{est.log_likelihood:.3f} ± {est.stderr:.3f} nats; ELBO {est.elbo:.3f}; "
              f"mean ESS {result['ess_mean']:.1f}; {result['seconds']:.1f} s")
        if args.ais:
            a = result["ais"]
            print(f"{args.split} log-likelihood (AIS, T={a['num_steps']}, {a['num_chains']} chains): "
                  f"{a['log_likelihood']:.3f} ± {a['stderr']:.3f} nats; acceptance {a['accept_rate']:.2f}; "
                  f"{a['seconds']:.1f} s")
    return 0


@command("sample", "PNG grid of samples from a run's model")
def cmd_sample(argv: List[str]) -> int:
    from pyrovae.evaluation.plots import save_samples

    p = argparse.ArgumentParser(prog="pyrovae sample", description="Write a PNG grid of samples x ~ p(x).")
    p.add_argument("run")
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--out", default=None, help="PNG path (default: RUN/samples-N.png)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--data-dir", default=None)
    args = p.parse_args(argv)
    if args.n < 1:
        raise SystemExit("pyrovae sample: --n must be >= 1")
    import pyro

    pyro.set_rng_seed(args.seed)
    run, device = _load(args)
    dataset = _run_data(run, args, device)
    test = dataset.test
    rows = torch_arange_like(test, args.n)
    batch = {k: v[rows] for k, v in test.items()}
    out = Path(args.out) if args.out else run.path / f"samples-{args.n}.png"
    save_samples(run.model, batch, dataset.image_shape, out)
    print(out)
    return 0


def _add_ais_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ais", action="store_true", help="also estimate log p(x) by annealed importance sampling")
    p.add_argument("--ais-steps", type=int, default=1000, help="AIS intermediate distributions T (default 1000)")
    p.add_argument("--ais-chains", type=int, default=16, help="AIS chains per datapoint (default 16)")
    p.add_argument("--ais-leapfrog", type=int, default=1, help="leapfrog steps per HMC transition (default 1)")


def _ais_result(run, data, args) -> dict:
    from pyrovae.evaluation.ais import ais_log_likelihood

    t0 = time.perf_counter()
    est = ais_log_likelihood(run.model, run.guide, data, num_steps=args.ais_steps, num_chains=args.ais_chains,
                             num_leapfrog_steps=args.ais_leapfrog, progress=not getattr(args, "json", False)
                             and sys.stderr.isatty())
    return {**est.as_dict(), "seconds": time.perf_counter() - t0}


@command("diagnose", "report.md with IWAE/ELBO, PSIS k-hat, latent monitors, gap split, figures, ArviZ netCDF")
def cmd_diagnose(argv: List[str]) -> int:
    from pyrovae.evaluation.report import diagnose

    p = argparse.ArgumentParser(prog="pyrovae diagnose", description="Diagnose a run: writes RUN/report.md, "
                                "RUN/diagnostics.json, RUN/diagnostics.nc and figures.")
    p.add_argument("run", help="run folder written by pyrovae fit")
    p.add_argument("--num-samples", type=int, default=1000,
                   help="importance samples per datapoint for the IWAE bound and k-hat (default 1000)")
    p.add_argument("--num-datapoints", type=int, default=300, help="first N test datapoints (default 300)")
    p.add_argument("--idata-draws", type=int, default=200, help="guide draws per datapoint in diagnostics.nc")
    p.add_argument("--gap-datapoints", type=int, default=100, help="datapoints for the gap split (0: skip)")
    p.add_argument("--ais-datapoints", type=int, default=100, help="datapoints for AIS (with --ais)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--data-dir", default=None)
    _add_ais_flags(p)
    args = p.parse_args(argv)
    for name in ("num_samples", "num_datapoints", "idata_draws", "ais_steps", "ais_chains", "ais_datapoints"):
        if getattr(args, name) < 1:
            raise SystemExit(f"pyrovae diagnose: --{name.replace('_', '-')} must be >= 1")
    run, device = _load(args)
    dataset = _run_data(run, args, device)
    t0 = time.perf_counter()
    results = diagnose(run, dataset, num_samples=args.num_samples, num_datapoints=args.num_datapoints,
                       idata_draws=args.idata_draws, gap_datapoints=args.gap_datapoints, ais=args.ais,
                       ais_steps=args.ais_steps, ais_chains=args.ais_chains, ais_datapoints=args.ais_datapoints,
                       ais_leapfrog=args.ais_leapfrog, seed=args.seed)
    iw, kh = results["importance"], results["khat"]
    print(f"IWAE K={iw['num_samples']} on {iw['num_datapoints']} test datapoints: {iw['log_likelihood']:.3f} ± "
          f"{iw['stderr']:.3f} nats; ELBO {iw['elbo']:.3f}; k-hat > 0.7 for {kh['share_above_0.7']:.1%}")
    for key, why in results["skipped"].items():
        print(f"skipped {key}: {why}")
    print(f"report: {run.path / 'report.md'} ({time.perf_counter() - t0:.1f} s)")
    return 0


def torch_arange_like(split, n):
    """Row indices 0..n-1, cycling when the split has fewer rows (only shapes are used)."""
    import torch

    size = next(iter(split.values())).shape[0]
    return torch.arange(n, device=next(iter(split.values())).device) % size


@command("bench", "time the training step against hand-written PyTorch (not a test)")
def cmd_bench(argv: List[str]) -> int:
    from pyrovae.bench.command import main as bench_main

    return bench_main(argv)


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = COMMANDS
    if not argv or argv[0] in ("-h", "--help"):
        if not argv:
            argv = ["fit"]
        else:
            print("usage: pyrovae {" + ",".join(commands) + "} ...\n")
            for name, (_, text) in commands.items():
                print(f"  {name:10s} {text}")
            return 0
    name, rest = argv[0], argv[1:]
    if name not in commands:
        print(f"pyrovae: unknown command {name!r}; choose one of {', '.join(commands)}", file=sys.stderr)
        return 2
    try:
        return commands[name][0](rest) or 0
    except (FileNotFoundError, FileExistsError, ValueError) as error:
        print(f"pyrovae {name}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
