"""Network building blocks shared by models and guides.

- :mod:`pyrovae.nn.layers`: activations by name, the MLP, option checks and the
  initialisations (``torch``, ``glorot``, ``burda``, ``data``); re-exported here
  (``from pyrovae.nn import MLP``).
- :mod:`pyrovae.nn.conv`: a convolutional encoder and decoder, and the masked, gated
  convolutions of a PixelCNN conditioned on a latent code.
- :mod:`pyrovae.nn.variance`: variance layers (zero-mean weights with learned variances).

Nothing here knows of Pyro, the registry or the data: it is torch modules alone.
"""

from pyrovae.nn.layers import (
    ACTIVATIONS, FROM_DATA, INITS, MLP, activation, bias_at_data_logits_, bias_at_token_frequencies_, check_positive,
    conv_bias_at_data_mean_, data_logits, default_init, glorot_, initialize_, output_at_data_mean_,
)

__all__ = ["ACTIVATIONS", "FROM_DATA", "INITS", "MLP", "activation", "bias_at_data_logits_", "bias_at_token_frequencies_",
           "check_positive", "conv_bias_at_data_mean_", "data_logits", "default_init", "glorot_", "initialize_",
           "output_at_data_mean_"]
