"""Amortized guides (posterior families), registered by name."""

from pyrovae.guides.acn import AcnGuide
from pyrovae.guides.conv import ConvGuide
from pyrovae.guides.cvae import CVAEGuide
from pyrovae.guides.denoising import DenoisingGuide
from pyrovae.guides.diag import DiagNormalGuide
from pyrovae.guides.dmm import DMMGuide
from pyrovae.guides.draw import DRAWGuide
from pyrovae.guides.flows import PlanarFlowGuide, RadialFlowGuide, SplineFlowGuide
from pyrovae.guides.fullcov import FullCovNormalGuide
from pyrovae.guides.hierarchical import BottomUpGuide, LadderGuide
from pyrovae.guides.hmm_vae import HMMVAEGuide
from pyrovae.guides.homoencoder import HomoencoderGuide
from pyrovae.guides.iaf import IAFGuide
from pyrovae.guides.m2 import M2Guide
from pyrovae.guides.mixture import MixtureGuide
from pyrovae.guides.robust import RobustEncoder
from pyrovae.guides.sentence import SentenceGuide, SentenceVMFGuide
from pyrovae.guides.seq2seq import Seq2SeqGuide
from pyrovae.guides.ssvae_text import SSVAETextGuide
from pyrovae.guides.statistician import StatisticianGuide, StatisticNetwork
from pyrovae.guides.stein import SteinGuide
from pyrovae.guides.variance import VarianceEncoder
from pyrovae.guides.vmf import VonMisesFisherGuide
from pyrovae.guides.vrnn import VRNNGuide

__all__ = [
    "AcnGuide", "BottomUpGuide", "CVAEGuide", "ConvGuide", "DMMGuide", "DRAWGuide", "DenoisingGuide",
    "DiagNormalGuide", "FullCovNormalGuide", "HMMVAEGuide", "HomoencoderGuide", "IAFGuide", "LadderGuide", "M2Guide",
    "MixtureGuide", "PlanarFlowGuide", "RadialFlowGuide", "RobustEncoder", "SSVAETextGuide", "SentenceGuide",
    "SentenceVMFGuide", "Seq2SeqGuide", "SplineFlowGuide", "StatisticNetwork", "StatisticianGuide",
    "SteinGuide", "VRNNGuide", "VarianceEncoder", "VonMisesFisherGuide",
]
