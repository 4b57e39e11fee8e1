"""``pyrovae bench --model M``: one registered model's training step and its importance-sampled
evaluation, on a fixed batch of its own data.

Each model is built as ``pyrovae fit --model M --data D`` builds it (its registered options'
defaults, its own guide, the objective fit gives the pair (the guide's, else the model's
``default_objective``, with the model's ``default_objective_options``: ``vae``'s ``meanfield``,
``hvae``'s and ``vrnn``'s KL warm-up), sizes from the data set) and trained on one
fixed batch of ``D``'s training split (:data:`BENCH_DATA`: the data set of the model's docs
page; the model's ``example_batch``, or random binary 784-pixel images, where that data set
is not on this machine), its padded sequences cut to the batch's longest row as fit's training
loop cuts each batch (:func:`cut_to_longest_row`). The step is exactly what :func:`pyrovae.fit` runs per batch
(:class:`~pyrovae.training.setup.Setup`'s step, plus the loop's check of the losses every
50 steps). The report:

- **step ms**: the whole step, median over interleaved blocks;
- with ``--profile`` its parts, each timed on its own: the **networks' forward** (every
  ``nn.Module`` call of the pair that is not itself a ``PyroModule``, outermost calls only,
  timed by hooks), the **densities** (``log_prob`` of every sample site of one guide trace and
  its replayed model trace), the guide's **draws** (every latent site of one guide trace drawn
  again from its recorded distribution, less the networks that drawing calls: a Gamma's or a von
  Mises-Fisher's sampler, a recurrent guide's steps), **Pyro's machinery** (the rest of the
  objective's forward pass: effect handlers, traces, plates, the objective's sums), the **backward** pass, the
  **optimizer**, and the suite's **bookkeeping** (the step less forward, backward and
  optimizer: zero_grad, quiet modules, the loss check); where the step is **replayed** (a CPU
  step recorded once, :mod:`pyrovae.training.replay`; or a CUDA graph), the program's Python
  does not run per step, and Pyro's machinery is the step less every other part (bookkeeping 0);
- with ``compile`` (``--compile``, CPU) also **compiled ms**: the step of ``pyrovae fit --compile``
  (the pair's networks compiled by ``torch.compile``; fit checks the compiled loss against the
  eager one on the first batch), built afresh from the same seed and timed in blocks alternating
  with the default step's; **compiled / step**, its ratio to the default step (replayed where
  fit replays), and **compile s**, the seconds its first steps took; a pair fit cannot compile
  gets ``compile refused`` (the one-line reason) instead;
- **eval ms/datapoint**: :func:`pyrovae.log_likelihood` with K = ``eval_samples`` (100) on the
  same batch, in eval mode, per datapoint; and that time in training steps.

>>> case = model_case("vae", batch_size=8, data_dir="/nonexistent")
>>> case.data, case.batch["x"].shape
("vae's example_batch(8)", torch.Size([8, 784]))
"""

from __future__ import annotations

import inspect
import math
import statistics
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

import pyro
import pyro.poutine as poutine
import torch

from pyrovae.bench.runners import sync
from pyrovae.models.base import guide_name_of

#: the data set each model is measured on (its docs page's); models not listed use MNIST
BENCH_DATA = {
    "acn": "mnist-indexed", "cvae": "mnist-halves", "dmm": "bach-chorales", "hmm-vae": "digit-sequences",
    "homoencoder": "mnist-sets", "m2": "mnist-100labels", "sentence-svae": "ptb", "sentence-vae": "ptb",
    "seq2seq-vae": "ptb-continue", "ssvae-text": "debian-140labels", "statistician": "synthetic-sets",
    "vrnn": "bach-chorales",
}
EVAL_SAMPLES = 100


@dataclass
class ModelCase:
    """A registered model built for the bench: the pair, its objective, one fixed batch."""

    name: str
    guide_name: str
    model: object
    guide: object
    objective: object
    batch: Dict[str, torch.Tensor]
    data: str


def model_case(name: str, batch_size: int = 100, data_dir=None, device="cpu", seed: int = 0,
               options: Optional[dict] = None) -> ModelCase:
    """Build model ``name`` with its own guide and objective, and a fixed batch of
    ``batch_size`` rows of its data set (see the module's docstring). ``options``: values
    for the model's and guide's options, each given to those that have it (e.g. small
    sizes for a smoke test)."""
    from pyrovae.data.datasets import DataNotFoundError, load_dataset
    from pyrovae.training.fit import objective_of
    from pyrovae.registry import build, constructor_options, get_guide, get_model, pair_guide

    model_factory = get_model(name)
    guide_name = guide_name_of(model_factory)
    guide_factory = get_guide(guide_name)
    data_name = BENCH_DATA.get(name, "mnist")
    generator = torch.Generator().manual_seed(seed)
    try:
        ds = load_dataset(data_name, data_dir=data_dir)
    except (DataNotFoundError, FileNotFoundError):
        ds = None
    torch.manual_seed(seed)
    if ds is not None:
        fill = ds.dims()
        rows = {k: v[:batch_size] for k, v in ds.train.items()}
        transform = getattr(ds, "transform", None)
        batch = transform(rows, generator) if transform is not None else rows
        data = f"{data_name} (the first {batch_size} training rows)"
    else:
        fill = {"x_dim": 784, "y_dim": 784, "vocab_size": 10_002, "num_classes": 10}
    # as pyrovae fit: an option the model and guide share takes the model's default in both
    shared = {k: p.default for k, p in constructor_options(model_factory).items()
              if p.default is not p.empty and k not in fill}
    values = {**shared, **(options or {})}
    accepted = lambda factory: {k: tuple(v) if isinstance(v, list) else v  # noqa: E731
                                for k, v in values.items() if k in constructor_options(factory)}
    model = build(model_factory, accepted(model_factory), fill=fill)
    if ds is None:
        if hasattr(model, "example_batch"):
            batch, data = model.example_batch(batch_size), f"{name}'s example_batch({batch_size})"
        else:
            batch = {"x": torch.bernoulli(torch.full((batch_size, 784), 0.3), generator=generator)}
            data = "random binary images (784 pixels)"
            if "y" in inspect.signature(model.forward).parameters:  # a conditional model: an output too
                batch["y"] = torch.bernoulli(torch.full((batch_size, 784), 0.3), generator=generator)
    batch = cut_to_longest_row(batch)
    guide = pair_guide(model, build(guide_factory, accepted(guide_factory), fill=fill))
    objective = objective_of(model_factory, guide_factory)  # as fit builds it, with the model's options
    for module in (model, guide):
        module.to(device)
    batch = {k: v.to(device) for k, v in batch.items()}
    return ModelCase(name, guide_name, model, guide, objective, batch, data)


def cut_to_longest_row(batch: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """``batch`` with its padded sequences cut to the batch's longest row, as fit's training loop
    cuts each batch (``epoch_batches(..., cut=True)``; :func:`pyrovae.data.sources.padded_groups`):
    the bench then times the steps a fit runs, not the padding of the whole split. Data without a
    ``mask`` / ``lengths`` pair come back as they are.

    >>> batch = {"x": torch.zeros(2, 5, 3), "mask": torch.tensor([[1, 1, 0, 0, 0], [1, 1, 1, 0, 0]]).bool(),
    ...          "lengths": torch.tensor([2, 3])}
    >>> {k: tuple(v.shape) for k, v in cut_to_longest_row(batch).items()}
    {'x': (2, 3, 3), 'mask': (2, 3), 'lengths': (2,)}
    """
    from pyrovae.data.sources import _cut, padded_groups

    groups = padded_groups(batch)
    if not groups:
        return batch
    n = len(next(iter(batch.values())))
    return _cut(dict(batch), groups, torch.arange(n))


class _Step:
    """What fit runs per batch (Setup's step) with the loop's loss check every 50 steps."""

    def __init__(self, case: ModelCase, lr: float = 1e-3, compile: bool = False):
        from pyrovae.training.setup import FitOptions, Setup

        n = len(next(iter(case.batch.values())))
        device = next(iter(case.batch.values())).device
        pyro.clear_param_store()
        self.setup = Setup(case.model, case.guide, case.batch, case.objective, n, lr, 0,
                           FitOptions(device=device, progress=False, figures=False, valid_every=0, compile=compile))
        self.batch, self.i, self.pending = case.batch, 0, []

    def __call__(self):
        loss = self.setup.step(self.batch, self.i)
        self.i += 1
        self.pending.append(loss)
        if len(self.pending) >= 50:
            if not torch.isfinite(torch.stack(self.pending).cpu()).all():
                raise FloatingPointError("a non-finite loss")
            self.pending = []
        return loss


def _warm_up(step: "_Step", least: int = 2, most: int = 8) -> None:
    """Run ``step`` at least ``least`` times and on until fit's recorded step is made (the CPU
    replay or the CUDA graph records on the 4th step, after 3 eager ones) or is off, ``most`` at
    most: the timed blocks of a slow model are one call each, and the VRNN's recording (a
    160-step recurrence traced, then checked) used to fall in them: 3.6 s a step, not 0.8."""
    stepper = step.setup.step
    for i in range(most):
        if i >= least and (getattr(stepper, "graph", None) is not None or not getattr(stepper, "enabled", False)):
            return
        step()


def clock(device) -> Callable[[], float]:
    """The timer of a device: the process's CPU time on a CPU (steadier than wall time on a
    shared machine; with one thread it is the step's compute), wall time on a GPU."""
    return time.process_time if torch.device(device).type == "cpu" else time.perf_counter


def _per_call_ms(fn: Callable, device, seconds: float, blocks: int) -> float:
    """Median milliseconds per call of ``fn`` over ``blocks`` blocks of about ``seconds`` each."""
    return _interleaved_ms({"fn": fn}, device, seconds, blocks)["fn"]


def _interleaved_ms(fns: Dict[str, Callable], device, seconds: float, blocks: int) -> Dict[str, float]:
    """Median milliseconds per call of each of ``fns`` over ``blocks`` rounds, each round a block
    of about ``seconds`` of every function in turn (the order rotated), so that background load
    falls on each alike."""
    now = clock(device)
    calls = {}
    for name, fn in fns.items():
        sync(device)
        t0 = now()
        fn()
        sync(device)
        calls[name] = max(1, min(200, round(seconds / max(now() - t0, 1e-6))))
    names, times = list(fns), {name: [] for name in fns}
    for block in range(blocks):
        for name in names[block % len(names):] + names[:block % len(names)]:
            sync(device)
            t0 = now()
            for _ in range(calls[name]):
                fns[name]()
            sync(device)
            times[name].append(1000 * (now() - t0) / calls[name])
    return {name: statistics.median(t) for name, t in times.items()}


class _NetworkTimer:
    """Forward hooks on a pair's networks (the ``nn.Module`` s that are not ``PyroModule`` s):
    the seconds spent inside their outermost calls."""

    def __init__(self, now: Callable[[], float], *owners):
        from pyro.nn import PyroModule

        self.now, self.seconds, self.depth, self.start, self.handles = now, 0.0, 0, 0.0, []
        for owner in owners:
            if not isinstance(owner, torch.nn.Module):
                continue
            for module in owner.modules():
                if not isinstance(module, PyroModule):
                    self.handles.append(module.register_forward_pre_hook(self._enter))
                    self.handles.append(module.register_forward_hook(self._leave))

    def _enter(self, module, args):
        if self.depth == 0:
            self.start = self.now()
        self.depth += 1

    def _leave(self, module, args, output):
        self.depth -= 1
        if self.depth == 0:
            self.seconds += self.now() - self.start

    def remove(self):
        for handle in self.handles:
            handle.remove()


def _densities(case: ModelCase, step: _Step) -> Callable[[], torch.Tensor]:
    """A function that recomputes the log-densities of every sample site of one guide trace
    and its replayed model trace (values and distributions recorded once)."""
    setup = step.setup
    with setup.train_step.quiet:
        guide_trace = poutine.trace(setup.call_guide).get_trace(**case.batch)
        model_trace = poutine.trace(poutine.replay(setup.call_model, trace=guide_trace)).get_trace(**case.batch)
    sites = [(site["fn"], site["value"]) for trace in (guide_trace, model_trace)
             for site in trace.nodes.values() if site["type"] == "sample"]

    def densities():
        return sum(fn.log_prob(value).sum() for fn, value in sites)

    return densities


def _draws(case: ModelCase, step: _Step) -> Callable[[], list]:
    """A function that redraws every latent site of one guide trace from its recorded
    distribution (``rsample`` where it has one; enumerated sites are not drawn)."""
    setup = step.setup
    with setup.train_step.quiet:
        guide_trace = poutine.trace(setup.call_guide).get_trace(**case.batch)
    fns = [site["fn"] for site in guide_trace.nodes.values()
           if site["type"] == "sample" and not site["is_observed"] and not site["infer"].get("enumerate")]

    def draws():
        return [fn.rsample() if fn.has_rsample else fn.sample() for fn in fns]

    return draws


def bench_model(name: str, batch_size: int = 100, data_dir=None, device="cpu", profile: bool = False,
                eval_samples: int = EVAL_SAMPLES, eval_rows: int = 20, seconds: float = 1.0, blocks: int = 3,
                seed: int = 0, options: Optional[dict] = None, compile: bool = False) -> dict:
    """One row of the models table: the step's ms (and with ``profile`` its parts; with
    ``compile``, on a CPU, the compiled step's beside it) and the evaluation's ms per datapoint
    at K = ``eval_samples`` (0: skip) over the batch's first ``eval_rows`` datapoints."""
    from pyrovae import log_likelihood
    from pyrovae.errors import UsageError

    device = torch.device(device)
    case = model_case(name, batch_size, data_dir, device, seed, options)
    n = len(next(iter(case.batch.values())))
    row = {"model": name, "guide": case.guide_name, "objective": getattr(case.objective, "name", None) or
           type(case.objective).__name__, "data": case.data, "batch": n}
    step = _Step(case)
    with pyro.validation_enabled(False):
        _warm_up(step)
        timed = {"step": step}
        if compile and device.type == "cpu":
            t0 = time.perf_counter()
            torch._dynamo.reset()  # a fresh process's compile caches: none of an earlier model's entries
            try:  # the same pair from the same seed, as fit --compile builds it
                compiled = _Step(model_case(name, batch_size, data_dir, device, seed, options), compile=True)
                _warm_up(compiled)
            except Exception as error:  # noqa: BLE001 - fit would stop here too: report it, go on to the next model
                row["compile refused"] = (str(error) if isinstance(error, UsageError) else
                                          f"{type(error).__name__}: {' '.join(str(error).split())[:200]}")
            else:
                row["compile s"] = time.perf_counter() - t0
                timed["compiled"] = compiled
        ms = _interleaved_ms(timed, device, seconds, blocks)  # the compiled step in blocks beside the default's
        row["step ms"] = ms["step"]
        row["replayed"] = "yes" if getattr(step.setup.step, "replays", 0) else "no"
        if "compiled" in ms:
            row["compiled ms"] = ms["compiled"]
            row["compiled / step"] = ms["compiled"] / ms["step"]
        if profile:
            row.update(_profile(case, step, device, seconds, blocks))
            row["step ms"] = min(row["step ms"], _per_call_ms(step, device, seconds, blocks))
            forward, forward_backward = row.pop("forward ms"), row.pop("forward + backward ms")
            row["pyro machinery ms"] = max(0.0, forward - row["networks forward ms"] - row["densities ms"]
                                           - row["draws ms"])
            row["bookkeeping ms"] = max(0.0, row["step ms"] - forward_backward - row["optimizer ms"])
            if step.setup.step.replays:  # the program ran once, recorded: what the replayed step spends
                # beyond the networks, densities, draws, backward and optimizer (all Python left in it)
                row["pyro machinery ms"] = max(0.0, row["step ms"] - row["networks forward ms"] - row["densities ms"]
                                               - row["draws ms"] - row["backward ms"] - row["optimizer ms"])
                row["bookkeeping ms"] = 0.0
            row["machinery share"] = (row["pyro machinery ms"] + row["bookkeeping ms"]) / row["step ms"]
    if eval_samples:
        case.model.eval(), case.guide.eval()
        with torch.no_grad():
            log_likelihood(case.model, case.guide, {k: v[:2] for k, v in case.batch.items()}, num_samples=2)
            now = clock(device)
            sync(device)
            t0 = now()
            est = log_likelihood(case.model, case.guide, {k: v[:eval_rows] for k, v in case.batch.items()},
                                 num_samples=eval_samples)
            sync(device)
        row["eval K"] = eval_samples
        row["eval ms/datapoint"] = 1000 * (now() - t0) / min(n, eval_rows)
        row["eval in steps"] = row["eval ms/datapoint"] / row["step ms"]
        row["log-likelihood (untrained)"] = float(est.log_likelihood)
    return row


def _profile(case: ModelCase, step: _Step, device, seconds: float, blocks: int) -> dict:
    setup = step.setup
    train_step, batch = setup.train_step, case.batch
    params = [p for group in train_step.optimizer.param_groups for p in group["params"]]

    def forward():
        with train_step.quiet, train_step.autocast:
            return train_step.module(batch, step.i)

    def forward_backward():
        train_step.optimizer.zero_grad(set_to_none=True)
        forward().backward()

    out = {"forward ms": _per_call_ms(forward, device, seconds, blocks),
           "forward + backward ms": _per_call_ms(forward_backward, device, seconds, blocks)}
    out["backward ms"] = max(0.0, out["forward + backward ms"] - out["forward ms"])
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    saved = [p.detach().clone() for p in params]
    out["optimizer ms"] = _per_call_ms(train_step.optimizer.step, device, seconds, blocks)
    with torch.no_grad():
        for p, s in zip(params, saved):
            p.copy_(s)
    densities = _densities(case, step)
    out["densities ms"] = _per_call_ms(densities, device, seconds, blocks)
    draws = _draws(case, step)
    timer = _NetworkTimer(clock(device), case.model, case.guide)
    try:  # the draws less the networks they call (a flow's, a recurrent guide's)
        with train_step.quiet:
            total = _per_call_ms(draws, device, seconds, blocks)
            timer.seconds = 0.0
            draws()
        out["draws ms"] = max(0.0, total - 1000 * timer.seconds)
    finally:
        timer.remove()
    timer = _NetworkTimer(clock(device), case.model, case.guide)
    try:
        calls = 0
        for _ in range(blocks):
            timer.seconds = 0.0
            forward()
            calls += 1
        best = math.inf
        for _ in range(blocks):
            timer.seconds = 0.0
            forward()
            best = min(best, timer.seconds)
    finally:
        timer.remove()
    out["networks forward ms"] = 1000 * best
    return out


COLUMNS = ["model", "data", "batch", "replayed", "step ms", "networks forward ms", "densities ms", "draws ms", "pyro machinery ms",
           "backward ms", "optimizer ms", "bookkeeping ms", "machinery share", "compiled ms", "compiled / step", "compile s",
           "compile refused", "eval ms/datapoint", "eval in steps"]


def format_table(rows: List[dict]) -> str:
    """The rows as a Markdown table (the columns present in any row)."""
    cols = [c for c in COLUMNS if any(c in r for r in rows)]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(_cell(r.get(c)) for c in cols) + " |")
    return "\n".join(lines)


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.3g}" if value < 100 else f"{value:.0f}"
    return str(value)


def all_model_names() -> List[str]:
    from pyrovae.registry import list_models

    return list_models()


def check_model_names(names: List[str]) -> Optional[str]:
    """The one-line error for names that are no registered model, or None."""
    known = set(all_model_names())
    unknown = [n for n in names if n != "all" and n not in known]
    if unknown:
        return (f"unknown model(s) {', '.join(unknown)} for --model; registered: {', '.join(sorted(known))} "
                "(or --model all)")
    return None
