"""Convolutional building blocks for image models: an encoder, a decoder, and the masked,
gated convolutions of a PixelCNN conditioned on a latent code.

Images travel through the suite as flat rows ``(..., D)`` with ``D = C * H * W``; these
modules take and give such rows, reshaping to ``(N, C, H, W)`` inside, so any leading batch
shape (a particle dimension of the importance-weighted objectives, say) passes through.

The PixelCNN (van den Oord, Kalchbrenner, Kavukcuoglu 2016, "Pixel Recurrent Neural
Networks"; van den Oord et al. 2016, "Conditional Image Generation with PixelCNN Decoders")
models

.. math:: p(x \\mid z) = \\prod_{i=1}^{D} p(x_i \\mid x_{<i}, z)

in raster order, with masked convolutions: mask type ``A`` (first layer) lets the output at
pixel i see pixels strictly before i; type ``B`` (later layers) also lets it see position i
of the previous layer, which itself only saw pixels before i. Each layer is gated,
``tanh(W_f * h + V_f z) * sigmoid(W_g * h + V_g z)``, with z entering every layer through a
learned projection ``V z`` (a per-channel bias, the same at every pixel). With ``stacks=1``
these are plain masked convolutions (one stack), which have the "blind spot" of the original
PixelCNN above and to the right of a pixel; ``stacks=2`` is van den Oord et al.'s fix, a
vertical stack (the rows above, the whole width of the kernel) feeding a horizontal stack (the
pixels to the left in the row), :class:`GatedStackLayer`.
Grey images only (one channel): with several colour channels the masks would also have to
order the channels, which this module does not do.
"""

from __future__ import annotations

import math
import typing
from typing import Literal, Optional, Sequence, Tuple

import torch
from torch import nn

from pyrovae.nn.layers import MLP, activation


Conditioning = Literal["global", "spatial"]
CONDITIONINGS = typing.get_args(Conditioning)


def image_shape_for(x_dim: int, image_shape: Optional[Sequence[int]] = None) -> Tuple[int, int, int]:
    """``(C, H, W)`` for rows of ``x_dim`` values: ``image_shape`` as ``(H, W)`` or ``(C, H, W)``
    when given, else a square grey image when ``x_dim`` is a square, else one row ``(1, 1, x_dim)``.

    >>> image_shape_for(784)
    (1, 28, 28)
    >>> image_shape_for(12)
    (1, 1, 12)
    """
    if image_shape is None or len(tuple(image_shape)) == 0:
        side = math.isqrt(x_dim)
        return (1, side, side) if side * side == x_dim else (1, 1, x_dim)
    shape = tuple(int(s) for s in image_shape)
    if len(shape) == 2:
        shape = (1,) + shape
    if len(shape) != 3 or any(s < 1 for s in shape):
        raise ValueError(f"image_shape must be (H, W) or (C, H, W) of positive sizes, got {tuple(image_shape)}")
    if math.prod(shape) != x_dim:
        raise ValueError(f"image_shape {tuple(image_shape)} holds {math.prod(shape)} values but x_dim is {x_dim}: "
                         "pass the data's image shape (e.g. --image-shape 28 28)")
    return shape


def _down(size: int) -> int:
    """The size after a 3x3 convolution of stride 2 and padding 1."""
    return (size - 1) // 2 + 1


class ConvEncoder(nn.Module):
    """Images ``(..., C*H*W)`` -> ``(..., out_dim)``: strided 3x3 convolutions (each halves the
    height and width and doubles the channels), then an MLP head.

    :param tuple image_shape: ``(C, H, W)``.
    :param int out_dim: output width.
    :param tuple channels: channels of the convolutions, e.g. ``(32, 64)``.
    :param tuple hidden_dims: widths of the dense layers after them.
    :param str activation_name: nonlinearity.

    >>> ConvEncoder((1, 28, 28), 4, channels=(8, 16))(torch.zeros(2, 5, 784)).shape
    torch.Size([2, 5, 4])
    """

    def __init__(self, image_shape: Sequence[int], out_dim: int, channels: Sequence[int] = (32, 64),
                 hidden_dims: Sequence[int] = (256,), activation_name: str = "relu"):
        super().__init__()
        self.image_shape = tuple(image_shape)
        c, h, w = self.image_shape
        layers = []
        for ch in channels:
            layers += [nn.Conv2d(c, ch, 3, stride=2, padding=1), activation(activation_name)]
            c, h, w = ch, _down(h), _down(w)
        self.convs = nn.Sequential(*layers)
        self.head = MLP(c * h * w, tuple(hidden_dims), out_dim, activation_name)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch = x.shape[:-1]
        h = self.convs(x.reshape(-1, *self.image_shape))
        return self.head(h.flatten(1)).reshape(*batch, -1)


class ConvDecoder(nn.Module):
    """Codes ``(..., z_dim)`` -> ``(..., out_channels, C*H*W)`` (or ``(..., C*H*W)`` when
    ``out_channels`` is None): a dense layer to a small feature map, then transposed 4x4
    convolutions of stride 2 (each doubles height and width), cropped to ``(H, W)``.

    :param int z_dim: code width.
    :param tuple image_shape: ``(C, H, W)``.
    :param tuple channels: channels of the feature maps from the smallest up, e.g. ``(64, 32)``.
    :param int out_channels: numbers per pixel (e.g. the parameters of a mixture), or None for one.

    >>> ConvDecoder(3, (1, 28, 28), channels=(16, 8))(torch.zeros(2, 3)).shape
    torch.Size([2, 784])
    """

    def __init__(self, z_dim: int, image_shape: Sequence[int], channels: Sequence[int] = (64, 32),
                 out_channels: Optional[int] = None, hidden_dims: Sequence[int] = (256,),
                 activation_name: str = "relu"):
        super().__init__()
        self.image_shape, self.out_channels = tuple(image_shape), out_channels
        c, h, w = self.image_shape
        channels = tuple(channels)
        scale = 2 ** len(channels)
        self.start = (channels[0], -(-h // scale), -(-w // scale))
        self.dense = nn.Sequential(MLP(z_dim, tuple(hidden_dims), math.prod(self.start), activation_name),
                                   activation(activation_name))
        layers = []
        outs = channels[1:] + ((out_channels or 1) * c,)
        for i, (c_in, c_out) in enumerate(zip(channels, outs)):
            layers.append(nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1))
            if i < len(channels) - 1:
                layers.append(activation(activation_name))
        self.deconvs = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        batch = z.shape[:-1]
        c, h, w = self.image_shape
        out = self.deconvs(self.dense(z).reshape(-1, *self.start))[..., :h, :w]
        if self.out_channels is None:
            return out.reshape(*batch, c * h * w)
        return out.reshape(-1, self.out_channels, c, h, w).reshape(*batch, self.out_channels, c * h * w)


class MaskedConv2d(nn.Conv2d):
    """A convolution whose output at pixel (r, c) sees the input only at pixels before (r, c)
    in raster order (mask ``A``), or before and at (r, c) (mask ``B``). One colour channel:
    every input channel at a position counts as that position.

    >>> conv = MaskedConv2d("A", 1, 1, 3, padding=1)
    >>> conv.mask[0, 0]
    tensor([[1., 1., 1.],
            [1., 0., 0.],
            [0., 0., 0.]])
    """

    def __init__(self, mask_type: str, in_channels: int, out_channels: int, kernel_size: int, **kwargs):
        if mask_type not in ("A", "B"):
            raise ValueError(f"mask_type must be 'A' or 'B', got {mask_type!r}")
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd (centred masks), got {kernel_size}")
        super().__init__(in_channels, out_channels, kernel_size, **kwargs)
        k = kernel_size
        mask = torch.ones(k, k)
        mask[k // 2, k // 2 + (mask_type == "B"):] = 0
        mask[k // 2 + 1:] = 0
        self.register_buffer("mask", mask.expand(out_channels, in_channels, k, k).clone())
        k = kernel_size // 2
        self._rows_only = (self.padding == (k, k) and self.stride == (1, 1) and self.dilation == (1, 1)
                           and self.groups == 1 and self.padding_mode == "zeros")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not getattr(self, "_rows_only", False):
            return self._conv_forward(x, self.weight * self.mask, self.bias)
        # the rows below the centre are all masked: convolve with the kernel's top k + 1 rows
        # only, on the input padded above and at the sides (the same sums less the zeros: 6 of 9
        # taps for 3x3, 28 of 49 for 7x7; 0.8 of the 3x3 convolution's time forward and backward)
        k = self.kernel_size[0] // 2
        return nn.functional.conv2d(nn.functional.pad(x, (k, k, k, 0)),
                                    self.weight[:, :, : k + 1] * self.mask[:, :, : k + 1], self.bias)


def check_stacks(stacks: int, name: str = "stacks") -> None:
    """A PixelCNN's stacks are 1 (masked convolutions) or 2 (vertical and horizontal)."""
    if stacks not in (1, 2):
        raise ValueError(f"{name} must be 1 (masked convolutions) or 2 (vertical and horizontal), got {stacks}")


def _condition(z_dim: int, cond_channels: int, width: int) -> Optional[nn.Module]:
    """The projection of a layer's condition to ``width`` channels: a 1x1 convolution of a feature
    map (``cond_channels``), a linear map of z broadcast over the pixels, or None without z."""
    if cond_channels:
        return nn.Conv2d(cond_channels, width, 1, bias=False)
    return nn.Linear(z_dim, width, bias=False) if z_dim else None


def _gate(a: torch.Tensor) -> torch.Tensor:
    f, g = a.chunk(2, dim=1)
    return torch.tanh(f) * torch.sigmoid(g)


def _pointwise(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """``conv(x)`` for a 1x1 convolution of stride 1, as one batched matrix product per image
    (``baddbmm``): the same sums as the convolution's, and on a CPU a third of its time forward
    and backward at 32 channels of 28x28, 0.6 at 16 (issue 22; docs/performance.md). Under
    ``torch.compile`` the convolution itself: inductor's step was 1.15 times as long with the
    matrix products."""
    if torch.compiler.is_compiling():
        return conv(x)
    n, c, height, width = x.shape
    weight = conv.weight.reshape(conv.out_channels, c).expand(n, -1, -1)
    x = x.reshape(n, c, height * width)
    if conv.bias is None:
        return torch.bmm(weight, x).reshape(n, -1, height, width)
    return torch.baddbmm(conv.bias[:, None], weight, x).reshape(n, -1, height, width)


class GatedMaskedLayer(nn.Module):
    """``h' = h + W_o (tanh(W_f * h + V_f c) * sigmoid(W_g * h + V_g c))`` (the residual only
    after the first layer), with masked convolutions ``W_f, W_g`` and a projection ``V`` of the
    condition c: a vector (``z``, a learned linear map broadcast over the pixels) or, with
    ``cond_channels``, a feature map ``(N, cond_channels, H, W)`` computed from z (a 1x1
    convolution, a different bias at every pixel)."""

    def __init__(self, mask_type: str, in_channels: int, channels: int, kernel_size: int, z_dim: int,
                 cond_channels: int = 0):
        super().__init__()
        self.conv = MaskedConv2d(mask_type, in_channels, 2 * channels, kernel_size, padding=kernel_size // 2)
        self.cond = _condition(z_dim, cond_channels, 2 * channels)
        self.spatial = bool(cond_channels)
        self.out = nn.Conv2d(channels, channels, 1)
        self.residual = mask_type == "B" and in_channels == channels  # never around mask A: it would pass x_i on

    def forward(self, h: torch.Tensor, c: Optional[torch.Tensor]) -> torch.Tensor:
        a = self.conv(h)
        if self.cond is not None and c is not None:  # in place: a is the convolution's own new map
            a = a.add_(_pointwise(self.cond, c) if self.spatial else self.cond(c)[:, :, None, None])
        out = _pointwise(self.out, _gate(a))
        return h + out if self.residual else out


class GatedStackLayer(nn.Module):
    """One layer of the gated PixelCNN without a blind spot (van den Oord et al. 2016, "Conditional
    Image Generation with PixelCNN Decoders"): a vertical stack ``v`` whose output at row r sees
    the rows above r only, across the kernel's width, and a horizontal stack ``h`` whose output at
    (r, c) sees the pixels to the left of c in row r (and c itself after the first layer) plus the
    vertical stack at (r, c):

    ``a_v = V * v + V_c c``, ``v' = tanh(a_v^f) sigmoid(a_v^g)``;
    ``a_h = H * h + W_{vh} a_v + H_c c``, ``h' = h + W_o (tanh(a_h^f) sigmoid(a_h^g))``
    (the residual after the first layer only).

    The first layer (``first=True``) reads the image in both stacks: its vertical convolution
    spans the ``kernel_size // 2`` rows strictly above, its horizontal one the ``kernel_size // 2``
    pixels strictly to the left, so the output at pixel i sees exactly the pixels before i within
    the kernel's reach (mask ``A`` without the blind spot). Later layers read the stacks' features,
    which at a position already see only what came before it: the vertical convolution spans its
    row and the ``kernel_size // 2`` above, the horizontal one its pixel and those to the left.
    Implemented with ordinary convolutions on asymmetrically padded inputs (no masks)."""

    def __init__(self, in_channels: int, channels: int, kernel_size: int, z_dim: int, cond_channels: int = 0,
                 first: bool = False):
        super().__init__()
        if kernel_size % 2 != 1 or (first and kernel_size < 3):
            raise ValueError(f"kernel_size must be odd (and at least 3 in the first layer), got {kernel_size}")
        k = kernel_size // 2
        self.first, self.k = first, k
        rows = k if first else k + 1  # the first: the k rows strictly above; later: and the row itself
        cols = k if first else k + 1  # the first: the k pixels strictly left; later: and the pixel itself
        self.v_conv = nn.Conv2d(in_channels, 2 * channels, (rows, kernel_size))
        self.h_conv = nn.Conv2d(in_channels, 2 * channels, (1, cols))
        self.v_to_h = nn.Conv2d(2 * channels, 2 * channels, 1)
        self.cond = _condition(z_dim, cond_channels, 4 * channels)  # both stacks' projections in one
        self.spatial = bool(cond_channels)
        self.out = nn.Conv2d(channels, channels, 1)
        self.residual = not first and in_channels == channels

    def _vertical(self, v: torch.Tensor) -> torch.Tensor:
        # k rows padded above: a later layer's k+1-row kernel gives H rows, row r seeing rows
        # r-k .. r; the first layer's k-row kernel, with the last row cut off (padding -1), gives
        # H rows too, row r seeing r-k .. r-1
        return self.v_conv(nn.functional.pad(v, (self.k, self.k, self.k, -1 if self.first else 0)))

    def _horizontal(self, h: torch.Tensor) -> torch.Tensor:
        # likewise along the row: columns c-k .. c-1 in the first layer, c-k .. c after
        return self.h_conv(nn.functional.pad(h, (self.k, -1 if self.first else 0, 0, 0)))

    def forward(self, v: torch.Tensor, h: torch.Tensor, c: Optional[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
        a_v = self._vertical(v)
        a_h = self._horizontal(h).add_(  # in place: the convolution's own new map (a_v is saved by v_to_h)
            _pointwise(self.v_to_h, a_v))
        if self.cond is not None and c is not None:
            cond = _pointwise(self.cond, c) if self.spatial else self.cond(c)[:, :, None, None]
            cond_v, cond_h = cond.chunk(2, dim=1)
            a_v, a_h = a_v + cond_v, a_h.add_(cond_h)
        h_out = _pointwise(self.out, _gate(a_h))
        return _gate(a_v), (h + h_out if self.residual else h_out)


class PixelCNN(nn.Module):
    """``p(x_i | x_<i, z)`` for every pixel at once (teacher forcing): images ``(..., C*H*W)``
    and codes ``(..., z_dim)`` (broadcast against each other) -> ``(..., out_channels, C*H*W)``,
    or ``(..., C*H*W)`` when ``out_channels`` is None (Bernoulli logits).

    :param tuple image_shape: ``(1, H, W)``.
    :param int z_dim: code width (0: unconditional).
    :param int num_layers: gated masked layers (the first of mask A, the rest of mask B).
    :param int channels: channels of each layer.
    :param int first_kernel: kernel of the first (mask A) layer; 7 in van den Oord et al.
    :param int kernel: kernel of the later layers.
    :param int out_channels: numbers per pixel, or None for one.
    :param int stacks: 1: masked convolutions, one stack (with the original PixelCNN's blind spot
        above and to the right); 2: a vertical and a horizontal stack without it
        (:class:`GatedStackLayer`; the same receptive rows).
    :param str conditioning: ``global``: z enters every layer as a learned per-channel bias, the
        same at every pixel (van den Oord et al.'s conditional PixelCNN); ``spatial``: z is first
        decoded by a :class:`ConvDecoder` into a ``channels``-deep feature map of the image's size,
        which enters every layer through a 1x1 convolution (PixelVAE's way, Gulrajani et al.),
        so z can say *where* as well as *what*.

    The receptive field (rows above a pixel it can see) is ``first_kernel // 2 + (num_layers -
    1) * (kernel // 2)``; a small one (few layers, small kernels) is VLAE's "local" decoder.

    >>> net = PixelCNN((1, 4, 4), z_dim=2, num_layers=2, channels=8)
    >>> net(torch.zeros(3, 16), torch.zeros(3, 2)).shape
    torch.Size([3, 16])
    """

    def __init__(self, image_shape: Sequence[int], z_dim: int, num_layers: int = 5, channels: int = 32,
                 first_kernel: int = 7, kernel: int = 3, out_channels: Optional[int] = None,
                 input_scale: float = 1.0, conditioning: str = "global", stacks: int = 1):
        super().__init__()
        if conditioning not in CONDITIONINGS:
            raise ValueError(f"unknown conditioning {conditioning!r}; choose one of {CONDITIONINGS}")
        check_stacks(stacks)
        self.stacks = stacks
        self.image_shape, self.out_channels, self.input_scale = tuple(image_shape), out_channels, input_scale
        c = self.image_shape[0]
        if c != 1:
            raise ValueError(f"the PixelCNN's masks order pixels of one channel; got {c} channels")
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        spatial = channels if conditioning == "spatial" and z_dim else 0
        self.z_map = ConvDecoder(z_dim, self.image_shape, (64, 32), out_channels=spatial) if spatial else None
        if stacks == 2:
            layers = [GatedStackLayer(c, channels, first_kernel, z_dim, spatial, first=True)]
            layers += [GatedStackLayer(channels, channels, kernel, z_dim, spatial) for _ in range(num_layers - 1)]
        else:
            layers = [GatedMaskedLayer("A", c, channels, first_kernel, z_dim, spatial)]
            layers += [GatedMaskedLayer("B", channels, channels, kernel, z_dim, spatial) for _ in range(num_layers - 1)]
        self.layers = nn.ModuleList(layers)
        self.head = nn.Sequential(nn.ReLU(), nn.Conv2d(channels, channels, 1), nn.ReLU(),
                                  nn.Conv2d(channels, out_channels or 1, 1))
        self.receptive_rows = first_kernel // 2 + (num_layers - 1) * (kernel // 2)

    def forward(self, x: torch.Tensor, z: Optional[torch.Tensor] = None) -> torch.Tensor:
        if z is not None:
            batch = torch.broadcast_shapes(x.shape[:-1], z.shape[:-1])
            x = x.expand(*batch, x.shape[-1])
            z = z.expand(*batch, z.shape[-1]).reshape(-1, z.shape[-1])
        else:
            batch = x.shape[:-1]
        h = x.reshape(-1, *self.image_shape) * self.input_scale
        c = z
        if self.z_map is not None and z is not None:
            c = self.z_map(z).reshape(h.shape[0], -1, *self.image_shape[1:])  # (N, channels, H, W)
        if self.stacks == 2:
            v = h
            for layer in self.layers:
                v, h = layer(v, h, c)
        else:
            for layer in self.layers:
                h = layer(h, c)
        for layer in self.head:  # self.head(h), its 1x1 convolutions as matrix products
            h = _pointwise(layer, h) if isinstance(layer, nn.Conv2d) and layer.kernel_size == (1, 1) else layer(h)
        out = h
        d = math.prod(self.image_shape)
        if self.out_channels is None:
            return out.reshape(*batch, d)
        return out.reshape(*batch, self.out_channels, d)
