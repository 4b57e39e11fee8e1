"""Small network builders shared by models and guides."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "elu": nn.ELU, "softplus": nn.Softplus, "gelu": nn.GELU}


def activation(name: str) -> nn.Module:
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}") from None


class MLP(nn.Sequential):
    """A multilayer perceptron ``in_dim -> hidden_dims... -> out_dim``.

    :param int in_dim: input width.
    :param hidden_dims: widths of the hidden layers (may be empty: a linear map).
    :param int out_dim: output width.
    :param str activation: nonlinearity between layers (none after the last).

    >>> MLP(4, (8,), 2)(torch.zeros(3, 4)).shape
    torch.Size([3, 2])
    """

    def __init__(self, in_dim: int, hidden_dims: Sequence[int], out_dim: int, activation: str = "tanh"):
        dims = [in_dim, *hidden_dims]
        layers = []
        for d_in, d_out in zip(dims[:-1], dims[1:]):
            layers += [nn.Linear(d_in, d_out), globals()["activation"](activation)]
        layers.append(nn.Linear(dims[-1], out_dim))
        super().__init__(*layers)


def check_positive(**values) -> None:
    """Raise a ValueError naming any non-positive size argument."""
    for name, value in values.items():
        sizes = value if isinstance(value, (tuple, list)) else (value,)
        if any((not isinstance(v, int)) or v <= 0 for v in sizes):
            raise ValueError(f"{name} must be a positive integer (or tuple of them), got {value!r}")


@torch.no_grad()
def glorot_(module: nn.Module) -> nn.Module:
    """Glorot-uniform weights (Glorot & Bengio 2010: U(-a, a), a = sqrt(6 / (fan_in + fan_out)))
    and zero biases for every ``nn.Linear`` in ``module``, in place; returns ``module``.

    torch's default, U(-1/sqrt(fan_in), 1/sqrt(fan_in)), shrinks a tanh network's signal by a
    factor of about 3 in variance per square layer; Glorot's keeps it, which is what Burda et
    al.'s deeper two-stochastic-layer networks were trained from (their reference code).

    >>> net = glorot_(MLP(200, (200,), 200))
    >>> bool(net[0].weight.abs().max() <= (6 / 400) ** 0.5), bool(net[0].bias.eq(0).all())
    (True, True)
    """
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return module


@torch.no_grad()
def bias_at_data_logits_(linear: nn.Linear, x: torch.Tensor, clip: float = 1e-3) -> nn.Linear:
    """Set the bias of a Bernoulli decoder's last layer to the logits of the data's mean
    (per pixel, clipped to ``[clip, 1 - clip]``), in place: with the weights small, the
    untrained decoder then predicts the mean image, and training starts from there instead of
    spending its first thousands of steps learning it while the latent code is ignored (the
    plateau that delays every VAE, and a stack of stochastic layers most).

    :param x: ``(N, D)`` training data in [0, 1] (grey levels: their mean is the binarized mean).

    >>> lin = bias_at_data_logits_(nn.Linear(3, 2), torch.tensor([[1.0, 0.0], [0.0, 0.0]]))
    >>> [round(v, 3) for v in torch.sigmoid(lin.bias).tolist()]
    [0.5, 0.001]
    """
    if x.dim() != 2 or x.shape[1] != linear.out_features:
        raise ValueError(f"x must be (N, {linear.out_features}) for a layer of {linear.out_features} outputs, "
                         f"got shape {tuple(x.shape)}")
    linear.bias.copy_(data_logits(x, clip).to(linear.bias))
    return linear


@torch.no_grad()
def output_at_data_mean_(linear: nn.Linear, x: torch.Tensor, likelihood: str = "bernoulli") -> nn.Linear:
    """A decoder's last layer's bias set so that, with small weights, it predicts the data's
    mean: the mean itself for a ``gaussian`` likelihood (the layer outputs the mean), its
    logits (:func:`bias_at_data_logits_`) for ``bernoulli`` and ``continuous_bernoulli``."""
    if likelihood == "gaussian":
        linear.bias.copy_(x.detach().mean(0).to(linear.bias))
        return linear
    return bias_at_data_logits_(linear, x)


def data_logits(x: torch.Tensor, clip: float = 1e-3) -> torch.Tensor:
    """The logits of the mean of ``x`` over its rows (dimension 0), the mean clipped to
    ``[clip, 1 - clip]``, in double precision: the output bias at which a Bernoulli decoder
    predicts the data's mean (pixels, or a piano roll's key frequencies).

    >>> [round(v, 3) for v in torch.sigmoid(data_logits(torch.tensor([[1.0, 0.0], [0.0, 0.0]]))).tolist()]
    [0.5, 0.001]
    """
    mean = x.detach().double().mean(0).clamp(clip, 1 - clip)
    return mean.log() - (-mean).log1p()


@torch.no_grad()
def conv_bias_at_data_mean_(conv: nn.Module, x: torch.Tensor, channels: int, likelihood: str = "bernoulli",
                            num_mixtures: int = 1) -> nn.Module:
    """Set the bias of a convolutional decoder's last layer (one bias per output channel) so
    that, with its weights small, it predicts each colour channel's mean over the pixels and
    the rows of ``x``: the logits of that mean for a ``bernoulli`` likelihood (the layer's
    ``channels`` outputs), the logistics' locations for a ``logistic-mixture`` (outputs laid
    out ``(3 K, channels)``: logits, locations, log-scales; the location is ``tanh`` of the
    output on the ``[-1, 1]`` scale, so the bias is ``atanh(2 mean - 1)``).

    :param x: ``(N, channels * H * W)`` rows in [0, 1], channel-major.

    >>> conv = conv_bias_at_data_mean_(nn.Conv2d(4, 1, 1), torch.tensor([[1.0, 0.0, 0.0, 0.0]]), 1)
    >>> round(float(torch.sigmoid(conv.bias)), 3)
    0.25
    """
    means = x.detach().double().reshape(x.shape[0], channels, -1).mean((0, 2))  # (channels,)
    if likelihood == "bernoulli":
        if conv.bias.numel() != channels:
            raise ValueError(f"a Bernoulli decoder's last layer needs {channels} outputs, got {conv.bias.numel()}")
        conv.bias.copy_(data_logits(means[None]).to(conv.bias))
        return conv
    if conv.bias.numel() != 3 * num_mixtures * channels:
        raise ValueError(f"a mixture of {num_mixtures} needs {3 * num_mixtures * channels} outputs, "
                         f"got {conv.bias.numel()}")
    centre = torch.atanh((2 * means - 1).clamp(-0.99, 0.99))
    conv.bias.view(3 * num_mixtures, channels)[num_mixtures:2 * num_mixtures] = centre.to(conv.bias)
    return conv


@torch.no_grad()
def bias_at_token_frequencies_(linear: nn.Linear, tokens: torch.Tensor, smoothing: float = 1.0) -> nn.Linear:
    """Set the bias of a softmax output layer over a vocabulary to the log of the tokens'
    frequencies (add-``smoothing`` counts, so no id gets minus infinity), in place: with the
    weights small, the untrained decoder then predicts the unigram distribution of the data
    (a sequence model's analogue of :func:`bias_at_data_logits_`).

    :param tokens: the observed token ids, any shape (padding already removed).

    >>> lin = bias_at_token_frequencies_(nn.Linear(3, 4), torch.tensor([1, 1, 1, 2]), smoothing=0.0)
    >>> [round(v, 2) for v in torch.softmax(lin.bias, 0).tolist()]
    [0.0, 0.75, 0.25, 0.0]
    """
    tokens = tokens.detach().reshape(-1).long()
    if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= linear.out_features):
        raise ValueError(f"token ids must be in [0, {linear.out_features}) for a layer of {linear.out_features} "
                         f"outputs, got ids from {int(tokens.min())} to {int(tokens.max())}")
    if smoothing < 0:
        raise ValueError(f"smoothing must be >= 0, got {smoothing}")
    counts = torch.bincount(tokens.cpu(), minlength=linear.out_features).double() + smoothing
    linear.bias.copy_((counts / counts.sum()).log().clamp(min=-1e4).to(linear.bias))
    return linear


#: ``fit(..., init=...)`` / ``pyrovae fit --init``: how a new run's weights start.
INITS = ("torch", "glorot", "burda", "data")
#: the schemes that read training rows (the model's ``init_from_data``)
FROM_DATA = ("burda", "data")


def default_init(model) -> str:
    """The init a new run of ``model`` gets when none is asked for (``fit(init=None)``, ``pyrovae
    fit`` without ``--init``): the model's own ``default_init`` if it declares one, else
    ``"burda"`` for a model that can start its output at the data's mean (it has
    ``init_from_data``: a Bernoulli or Gaussian likelihood over the pixels, or a softmax over a
    vocabulary started at the tokens' frequencies), else ``"torch"``.
    Measured: docs/vae.md#initialisation, docs/hierarchical.md, docs/semi-supervised.md.

    >>> class Decoder(torch.nn.Linear):
    ...     def init_from_data(self, x, **unused): pass
    >>> default_init(Decoder(2, 6)), default_init(lambda x: None)
    ('burda', 'torch')
    """
    declared = getattr(model, "default_init", None)
    if isinstance(declared, str):
        return declared
    return "burda" if callable(getattr(model, "init_from_data", None)) else "torch"


def initialize_(model, guide, batch: dict, scheme: str = "torch") -> None:
    """Initialise a pair's weights in place when a run starts.

    - ``"torch"``: leave torch's defaults (each layer's U(-1/sqrt(fan_in), 1/sqrt(fan_in))).
    - ``"glorot"``: :func:`glorot_` on every linear layer of the model and the guide, then
      each one's ``init_start_()`` where it has one (a deliberate start that the redrawn
      layers would undo: the ``fullcov`` guide's zero off-diagonal outputs).
    - ``"data"``: torch's layers, then the model's ``init_from_data(**batch)`` (``"burda"``
      without Glorot's layers; the DMM's default: docs/sequences.md#the-dmm-against-pyros-example-at-equal-budget).
    - ``"burda"``: Glorot, then the model's ``init_from_data(**batch)``: for the suite's
      decoders (``vae``, ``hvae``, ``m2``) the output bias at the data's mean, its logits for
      a Bernoulli (:func:`output_at_data_mean_`), as Burda et al.'s reference code starts its
      VAEs and IWAEs. Measured (docs/hierarchical.md): it removes the plateau of the first epochs,
      most for the two-stochastic-layer model. For the sequence models (``sentence-vae``,
      ``sentence-svae``, ``seq2seq-vae``, ``ssvae-text``) the softmax's bias at the training
      tokens' log frequencies (:func:`bias_at_token_frequencies_`; docs/text.md).

    :param batch: training rows as the model's keyword arguments (``{"x": ...}``).
    :raises ValueError: an unknown scheme, or ``"burda"`` / ``"data"`` for a model without ``init_from_data``.
    """
    if scheme not in INITS:
        raise ValueError(f"unknown init {scheme!r}; choose one of {', '.join(INITS)}")
    if scheme in FROM_DATA and not callable(getattr(model, "init_from_data", None)):
        raise ValueError(f"init={scheme!r} sets the output bias from the data, which this model "
                         f"({type(model).__name__}) does not do (it has no init_from_data method); use init='glorot'")
    if scheme in ("glorot", "burda"):
        for module in (model, guide):
            if isinstance(module, nn.Module):
                glorot_(module)
                start = getattr(module, "init_start_", None)
                if callable(start):  # a deliberate start (e.g. fullcov's zero off-diagonal) survives
                    start()
    if scheme in FROM_DATA:
        model.init_from_data(**batch)
