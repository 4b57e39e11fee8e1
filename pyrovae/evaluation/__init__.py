"""Evaluation: importance-sampled and AIS log-likelihoods, BDMC, the inference gap, the
latent space, monitors, paired comparisons, ArviZ and PSIS diagnostics, the report and its figures."""

from pyrovae.evaluation.ais import AISEstimate, ais_log_likelihood
from pyrovae.evaluation.bdmc import BDMCResult, bdmc
from pyrovae.evaluation.compare import PairedDifference, paired_difference
from pyrovae.evaluation.diagnostics import khat_summary, psis_diagnostic, psis_khat, to_inference_data
from pyrovae.evaluation.inference_gap import InferenceGap, inference_gap
from pyrovae.evaluation.log_likelihood import LogLikelihood, elbo, log_likelihood
from pyrovae.evaluation.monitors import LatentMonitors, latent_monitors

__all__ = ["AISEstimate", "BDMCResult", "InferenceGap", "LatentMonitors", "LogLikelihood", "PairedDifference",
           "ais_log_likelihood", "bdmc", "elbo", "inference_gap", "khat_summary", "latent_monitors", "log_likelihood",
           "paired_difference", "psis_diagnostic", "psis_khat", "to_inference_data"]
