"""``pyrovae diagnose``: every evaluation of a run folder in one report.

:func:`diagnose` computes, on the first ``num_datapoints`` test datapoints: the
importance-sampled log-likelihood (IWAE bound with ``num_samples`` draws), the ELBO, the
effective sample size and the PSIS k-hat of the same importance weights; the latent monitors
(active units, KL per dimension, rate, distortion, mutual information); the inference gap
split on a smaller subset; optionally AIS. It writes into the run folder::

    report.md          the key numbers and all figures (Markdown)
    diagnostics.json   the same numbers, machine-readable
    diagnostics.nc     ArviZ InferenceData (netCDF through h5netcdf)
    khat.png  kl_per_dim.png  latent_map.png  traversals.png  interpolations.png
    (and training_curves.png, samples.png, reconstructions.png if missing)

A step that does not apply to the pair (e.g. the gap split for a non-Gaussian guide) is
skipped with its reason in the report.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Optional

import numpy as np
import pyro

from pyrovae.evaluation.ais import DEFAULT_AIS_STEPS
from pyrovae.evaluation.log_likelihood import estimate
from pyrovae.evaluation.sampling import CannotSampleError

IMAGE_FIGURES = ("samples.png", "reconstructions.png", "traversals.png", "interpolations.png")
FIGURES = (
    ("training_curves.png", "training curves"), ("samples.png", "samples x ~ p(x)"),
    ("reconstructions.png", "reconstructions"), ("traversals.png", "latent traversals"),
    ("interpolations.png", "interpolations"), ("latent_map.png", "latent map by label"),
    ("khat.png", "PSIS k-hat per datapoint"), ("kl_per_dim.png", "KL per latent dimension"),
)


def importance_summary(model, guide, data: dict, num_samples: int, batch_size: int = 100) -> dict:
    """One pass of ``num_samples`` guide draws per datapoint -> IWAE bound, ELBO, ESS, k-hat."""
    from pyrovae.evaluation.diagnostics import psis_khat

    khat = []
    est = estimate(model, guide, data, num_samples, batch_size, on_weights=lambda log_w: khat.append(psis_khat(log_w)))
    return {"per_datapoint": est.per_datapoint, "khat": np.concatenate(khat), "log_likelihood": est.log_likelihood,
            "stderr": est.stderr, "elbo": est.elbo, "ess_mean": float(est.ess.mean()),
            "num_samples": num_samples, "num_datapoints": int(est.per_datapoint.numel())}


def _timed(results: dict, key: str, fn):
    t0 = time.perf_counter()
    try:
        value = fn()
    except (ValueError, NotImplementedError) as error:  # a step that does not apply to this pair
        results["skipped"][key] = str(error)
        return None
    results["seconds"][key] = round(time.perf_counter() - t0, 2)
    return value


def _require_latent(run, test, site=None) -> None:
    """:class:`PyrovaeError` for a pair whose guide samples no latent site (a deterministic model);
    :class:`UsageError` for a ``site`` the guide does not sample."""
    import torch
    from pyro import poutine

    from pyrovae.errors import PyrovaeError, UsageError
    from pyrovae.infer.importance import bind_batch, latent_sites

    batch = {k: v[:2] for k, v in test.items()}
    state = pyro.util.get_rng_state()  # the check draws nothing that the report's numbers see
    try:
        with poutine.block(), torch.no_grad():
            trace = poutine.trace(bind_batch(run.guide, batch)).get_trace(**batch)
    finally:
        pyro.util.set_rng_state(state)
    if not latent_sites(trace):
        raise PyrovaeError(f"{run.path}: the guide samples no latent site (a deterministic model), so there is "
                           "nothing to diagnose; its log-likelihood from `pyrovae evaluate` is exact")
    names = [site["name"] for site in latent_sites(trace)]
    if site is not None and site not in names:
        raise UsageError(f"--site {site}: the guide samples no latent site {site!r}; choose one of {', '.join(names)}")


def diagnose(run, dataset, *, num_samples: int = 1000, num_datapoints: int = 300, idata_draws: int = 200,
             gap_datapoints: int = 100, ais: bool = False, ais_steps: int = DEFAULT_AIS_STEPS, ais_chains: int = 16,
             ais_datapoints: int = 100, ais_leapfrog: int = 1, seed: int = 0, site: Optional[str] = None) -> dict:
    """Evaluate a loaded run on its test split and write report.md, diagnostics.json/.nc and figures.

    :param run: a :class:`~pyrovae.training.run_folder.Run` (from :func:`~pyrovae.training.run_folder.load_run`);
        evaluation comes before training in the package order, so it is handed in, not imported.
    :param dataset: its :class:`~pyrovae.data.DataSet`, on the run's device, or its
        :class:`~pyrovae.data.UserData` (``.to(device)``), of which the first rows are read; or
        the test data itself: tensors, a dict of tensors, a torch Dataset or DataLoader (image
        figures then use run.json's image shape, where it has one).
    :param int num_samples: importance samples per datapoint (IWAE bound and k-hat).
    :param int num_datapoints: evaluate the first this many test datapoints.
    :param int idata_draws: guide draws per datapoint stored in diagnostics.nc.
    :param int gap_datapoints: datapoints for the inference gap split (0: skip).
    :param bool ais: also estimate log p(x) by AIS on ``ais_datapoints`` datapoints.
    :param str site: the latent site the monitors read (``--site``; default: the guide's only one).
    :returns: the numbers written to diagnostics.json.
    """
    from pyrovae.evaluation import plots as plots
    from pyrovae.evaluation.diagnostics import khat_summary, save_inference_data, to_inference_data
    from pyrovae.evaluation.inference_gap import inference_gap
    from pyrovae.evaluation.monitors import latent_monitors

    if not callable(getattr(run, "write_json", None)):  # before any work: nothing half-written
        raise TypeError(f"diagnose takes a loaded run (pyrovae.load_run(path)), got {type(run).__name__}")
    pyro.set_rng_seed(seed)
    out = Path(run.path)
    model, guide = run.model, run.guide
    if not hasattr(dataset, "test"):  # the test data itself
        dataset = _as_test(dataset, run, max(num_datapoints, 1000))
    elif not isinstance(dataset.test, dict):  # data read from a path: its first rows, as tensors
        dataset = _held(dataset, max(num_datapoints, 1000))
    test = {k: v[:num_datapoints] for k, v in dataset.test.items()}
    _require_latent(run, test, site)
    results = {"run": str(out), "data": run.data_name, "split": "test", "seconds": {}, "skipped": {},
               "epoch": run.epoch, "weights_epoch": run.weights_epoch,
               "model": run.config.get("model"), "guide": run.config.get("guide")}
    iw = _timed(results, "importance", lambda: importance_summary(model, guide, test, num_samples))
    results["importance"] = {k: v for k, v in iw.items() if k not in ("per_datapoint", "khat")}
    results["khat"] = khat_summary(iw["khat"])
    monitors = _timed(results, "monitors", lambda: latent_monitors(model, guide, dataset.test, site=site,
                                                                    max_datapoints=1000))
    if monitors is not None:
        results["monitors"] = monitors.as_dict()
    if gap_datapoints > 0:
        gap = _timed(results, "gap", lambda: inference_gap(model, guide, test, num_datapoints=gap_datapoints,
                                                           refine_steps=200, num_particles=5,
                                                           num_samples=num_samples))
        if gap is not None:
            results["gap"] = gap.as_dict()
    if ais:
        from pyrovae.evaluation.ais import ais_log_likelihood

        subset = {k: v[:ais_datapoints] for k, v in test.items()}
        est = _timed(results, "ais", lambda: ais_log_likelihood(model, guide, subset, num_steps=ais_steps,
                                                                 num_chains=ais_chains,
                                                                 num_leapfrog_steps=ais_leapfrog))
        if est is not None:
            m = int(est.per_datapoint.numel())
            results["ais"] = {**est.as_dict(), "iwae_same_datapoints": float(iw["per_datapoint"][:m].mean())}
    idata = _timed(results, "inference_data", lambda: to_inference_data(
        model, guide, test, num_samples=idata_draws, num_datapoints=num_datapoints, num_predictive=20))
    if idata is not None:
        save_inference_data(idata, out / "diagnostics.nc")
        results["inference_data"] = {"file": "diagnostics.nc", "groups": list(idata.groups()),
                                     "draws": idata_draws, "datapoints": int(idata.posterior.sizes["datapoint"])}
    _timed(results, "figures", lambda: _figures(out, run, dataset, test, iw["khat"], monitors, plots, results,
                                                site))
    run.write_json("diagnostics.json", results)  # atomically: the run folder writes its own files
    (out / "report.md").write_text(render_report(results, out))
    return results


def _held(dataset, n: int):
    """A stand-in for a :class:`~pyrovae.data.UserData` whose ``test`` is its first ``n`` rows as
    tensors on its device (what the report reads: at most 1000 rows for the monitors)."""
    import types

    return types.SimpleNamespace(test=dataset.rows("test", n), image_shape=dataset.image_shape)


def _as_test(data, run, n: int):
    """Test data given as tensors, a Dataset or a DataLoader: its first ``n`` rows on the run's device."""
    import types

    from pyrovae.data.inputs import head

    device = next((p.device for m in (run.model, run.guide) if hasattr(m, "parameters") for p in m.parameters()),
                  None)
    shape = (run.config.get("data") or {}).get("image_shape")
    return types.SimpleNamespace(test=head(data, n, device), image_shape=tuple(shape) if shape else None)


def _figures(out, run, dataset, test, khat, monitors, plots, results, site=None):
    plots.save_khat(khat, out / "khat.png")
    if monitors is not None and monitors.kl_per_dim is not None:
        plots.save_kl_per_dim(monitors.kl_per_dim, monitors.mean_variance, out / "kl_per_dim.png")
    if run.metrics and not (out / "training_curves.png").exists():
        plots.save_training_curves(run.metrics, out / "training_curves.png")
    steps = [("latent_map", lambda: plots.save_latent_map(run.guide, dataset.test, out / "latent_map.png",
                                                                         site=site))]
    if plots.is_image_shape(dataset.image_shape):
        try:  # the observed site the image figures show, found from the trace
            results["figure_site"] = plots.observed_name(run.model, test)
        except (ValueError, NotImplementedError) as error:
            results["skipped"]["image figures"] = str(error)
            return
        steps += [
            ("traversals", lambda: plots.save_traversals(run.model, run.guide, test, dataset.image_shape,
                                                         out / "traversals.png", site=site)),
            ("interpolations", lambda: plots.save_interpolations(run.model, run.guide, test, dataset.image_shape,
                                                                 out / "interpolations.png", site=site)),
        ]
        if getattr(run.model, "sequential_sampling", False):  # minutes pixel by pixel: `pyrovae sample` draws them
            results["skipped"]["samples"] = "drawn pixel by pixel; run `pyrovae sample RUN --n 16`"
        elif not (out / "samples.png").exists():
            steps.append(("samples", lambda: plots.save_samples(run.model, 64, dataset.image_shape,
                                                                out / "samples.png", like=test)))
        if not (out / "reconstructions.png").exists():
            steps.append(("reconstructions", lambda: plots.save_reconstructions(
                run.model, run.guide, {k: v[:32] for k, v in test.items()}, dataset.image_shape,
                out / "reconstructions.png")))
    for name, step in steps:
        try:
            step()
        except (ValueError, NotImplementedError, CannotSampleError) as error:
            results["skipped"][name] = str(error)


def _fmt(value, digits=3):
    return "n/a" if value is None else f"{value:.{digits}f}"


def _weights(results: dict) -> str:
    """Which epoch's parameters were diagnosed (the best validation ELBO's, unless the last)."""
    epoch, weights = results.get("epoch"), results.get("weights_epoch")
    if weights is None or weights == epoch:
        return f"the weights of its last epoch ({epoch})"
    return f"the weights of epoch {weights}, its best validation ELBO, of the {epoch} it finished"


def render_report(results: dict, out: Path) -> str:
    """The Markdown of report.md from the numbers of :func:`diagnose`."""
    iw, kh = results["importance"], results["khat"]
    name = lambda role: (results.get(role) or {}).get("name", "?")  # noqa: E731
    lines = [f"# Diagnostics of `{Path(results['run']).name}`", "",
             f"Model `{name('model')}`, guide `{name('guide')}`, data `{results['data']}` "
             f"(test split, first {iw['num_datapoints']} datapoints), {_weights(results)}. Produced by "
             "`pyrovae diagnose`.", "",
             "## Key numbers", "", "| quantity | value |", "|---|---|",
             f"| test log-likelihood, IWAE K={iw['num_samples']} | {_fmt(iw['log_likelihood'])} ± {_fmt(iw['stderr'])} nats |",
             f"| ELBO | {_fmt(iw['elbo'])} nats |",
             f"| mean ESS of the importance weights | {iw['ess_mean']:.1f} of {iw['num_samples']} |",
             f"| PSIS k-hat | {kh['share_above_0.7']:.1%} > 0.7, {kh['share_above_0.5']:.1%} > 0.5, "
             f"max {kh['max']:.2f}, median {kh['median']:.2f} |"]
    if "ais" in results:
        a = results["ais"]
        lines.append(f"| AIS (T={a['num_steps']}, {a['num_chains']} chains, first {a['num_datapoints']} datapoints) | "
                     f"{_fmt(a['log_likelihood'])} ± {_fmt(a['stderr'])} nats (IWAE on the same: "
                     f"{_fmt(a['iwae_same_datapoints'])}) |")
    if "monitors" in results:
        m = results["monitors"]
        lines += [f"| active units (Var_x E_q[z_j] > 0.01) | {m['active_units']} of {m['num_latents']} |",
                  f"| rate KL(q(z|x) ‖ p(z)) / distortion -E log p(x|z) | {_fmt(m['rate'])} / {_fmt(m['distortion'])} nats |",
                  f"| mutual information I_q(x; z) (at most log N = {math.log(m['num_datapoints']):.2f}) | "
                  f"{_fmt(m.get('mutual_info'))} nats |"]
    if "gap" in results:
        g = results["gap"]
        lines += [f"| inference gap log p(x) - ELBO ({g['num_datapoints']} datapoints, log p(x) by {g['estimator']}) | "
                  f"{_fmt(g['inference_gap'])} nats |",
                  f"| &nbsp; approximation gap log p(x) - ELBO(q*) | {_fmt(g['approximation_gap'])} nats |",
                  f"| &nbsp; amortization gap ELBO(q*) - ELBO(q) | {_fmt(g['amortization_gap'])} nats |"]
    if kh["share_above_0.7"] > 0.1:
        lines += ["", f"**Warning:** k-hat > 0.7 for {kh['share_above_0.7']:.0%} of the datapoints: the importance "
                  "weights are heavy-tailed, q(z|x) misses posterior mass, and the IWAE number above can sit well "
                  "below log p(x), by more than its standard error suggests. " + ("Compare with the AIS row." if "ais" in results else
                                        "Run `pyrovae diagnose RUN --ais` (or `pyrovae evaluate RUN --ais`).")]
    site = results.get("figure_site")
    figures = [(f, f"{title} (site `{site}`)" if site and f in IMAGE_FIGURES else title)
               for f, title in FIGURES if (out / f).exists()]
    lines += ["", "## Figures", "", "| | |", "|---|---|"]
    for i in range(0, len(figures), 2):
        cells = [f"**{title}**<br>![{title}]({f})" for f, title in figures[i:i + 2]]
        lines.append("| " + " | ".join(cells + [""] * (2 - len(cells))) + " |")
    lines += ["", "## Files", ""]
    if "inference_data" in results:
        d = results["inference_data"]
        lines.append(f"- [diagnostics.nc](diagnostics.nc): ArviZ InferenceData ({', '.join(d['groups'])}; "
                     f"{d['draws']} guide draws for each of {d['datapoints']} datapoints); "
                     "`arviz.from_netcdf(\"diagnostics.nc\")`")
    lines.append("- [diagnostics.json](diagnostics.json): every number above, and the seconds each step took")
    if results["skipped"]:
        lines += ["", "## Skipped", ""] + [f"- {k}: {v}" for k, v in results["skipped"].items()]
    lines += ["", "## Reading it", "",
              "- k-hat < 0.5: q(z|x) covers the posterior and the IWAE estimate has converged; 0.5-0.7: usable "
              "but slow; > 0.7: importance sampling from q is unreliable for those datapoints; trust AIS "
              "(`--ais`) and consider a richer guide.",
              "- Inactive units and a rate near 0 signal posterior collapse; the mutual information says how "
              "much the code tells about x.",
              "- A large amortization gap: the encoder, not the family, is the bottleneck.",
              "- See docs/evaluation.md.", ""]
    return "\n".join(lines)
