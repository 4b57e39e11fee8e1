"""Generative models (Pyro model functions as PyroModules), registered by name."""

from pyrovae.models.acn import AssociativeCompressionNetwork
from pyrovae.models.conv import ConvVAE
from pyrovae.models.cvae import CVAE
from pyrovae.models.dmm import DMM
from pyrovae.models.draw import DRAW
from pyrovae.models.hierarchical import HierarchicalVAE
from pyrovae.models.hmm_vae import HMMVAE
from pyrovae.models.homoencoder import VariationalHomoencoder
from pyrovae.models.hyperspherical import HypersphericalVAE
from pyrovae.models.least_squares import LeastSquaresVAE
from pyrovae.models.linear import LinearGaussianVAE
from pyrovae.models.m2 import M2
from pyrovae.models.pixelcnn import PixelCNNVAE
from pyrovae.models.robust import RobustVAE
from pyrovae.models.sentence import SentenceLM, SentenceVAE, SphericalSentenceVAE
from pyrovae.models.seq2seq import Seq2Seq, Seq2SeqVAE
from pyrovae.models.ssvae_text import SSVAEText
from pyrovae.models.statistician import NeuralStatistician
from pyrovae.models.vae import VAE
from pyrovae.models.variance import VarianceVAE
from pyrovae.models.vrnn import BernoulliRNN, VRNN

__all__ = [
    "AssociativeCompressionNetwork", "BernoulliRNN", "CVAE", "ConvVAE", "DMM", "DRAW", "HMMVAE", "HierarchicalVAE",
    "HypersphericalVAE",
    "LeastSquaresVAE", "LinearGaussianVAE", "M2", "NeuralStatistician", "PixelCNNVAE",
    "RobustVAE", "SSVAEText", "SentenceLM", "SentenceVAE", "Seq2Seq", "Seq2SeqVAE", "SphericalSentenceVAE",
    "VAE", "VRNN", "VarianceVAE", "VariationalHomoencoder",
]
