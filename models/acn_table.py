"""Nearest neighbours in code space: the table of training codes an Associative Compression
Network conditions its prior on (Graves, Menick, van den Oord 2018), and a batched exact search.

:func:`knn` finds, for each of ``B`` query codes, the ``k`` nearest of ``N`` stored codes
(squared Euclidean distance) exactly, without ever holding the ``B x N`` distance matrix:
the codes are read ``chunk`` rows at a time (the squared distances to the chunk as one matrix
product, :math:`\\|c\\|^2 - 2 q^\\top c` plus :math:`\\|q\\|^2`, then ``topk``), and each
chunk's best are merged with the best so far. The work is ``B N Z``
multiply-adds per batch on whatever device the tensors are on (one matrix product per
chunk); the memory ``B * chunk``. Rows can be left out per query (``exclude``: a datapoint is
not its own neighbour) and table-wide (``valid``: rows not filled yet).

:class:`CodeTable` holds one code per training datapoint, as buffers (``codes`` ``(N, Z)``,
``filled`` ``(N,)``), so it is saved in a module's ``state_dict`` and with it in a run's
checkpoint, and a resumed run continues with the table it had. It grows to the largest index it
is given (no need to know N in advance); loading a state dict sizes it to the saved table.

The batches that fill the table carry ``index``: ``--data digits-indexed`` / ``mnist-indexed``
or :func:`pyrovae.data.indexed.with_index`.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import nn

__all__ = ["CodeTable", "knn"]


def knn(queries: torch.Tensor, codes: torch.Tensor, k: int, *, chunk: int = 16384,
        exclude: Optional[torch.Tensor] = None, valid: Optional[torch.Tensor] = None
        ) -> Tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` nearest ``codes`` ``(N, Z)`` of each of ``queries`` ``(B, Z)``: squared distances
    and row indices, each ``(B, k)``, nearest first.

    :param int chunk: rows of ``codes`` compared at a time (memory ``B * chunk``).
    :param exclude: ``(B,)`` a row of ``codes`` that query ``b`` must not return (its own; -1: none).
    :param valid: ``(N,)`` bool, the rows that may be returned (None: all).
    :raises ValueError: fewer than ``k`` rows can be returned.

    >>> codes = torch.tensor([[0.0], [1.0], [3.0], [10.0]])
    >>> knn(torch.tensor([[0.9]]), codes, 2)[1].tolist()
    [[1, 0]]
    >>> knn(torch.tensor([[0.9]]), codes, 2, exclude=torch.tensor([1]))[1].tolist()
    [[0, 2]]
    """
    num_codes = codes.shape[0]
    available = num_codes if valid is None else int(valid.sum())
    if exclude is not None:
        available -= 1
    if k < 1 or available < k:
        raise ValueError(f"k={k} nearest neighbours asked of a table with {available} rows to choose from; "
                         "fill the table first (train an epoch) or ask for fewer")
    best_d = queries.new_full((queries.shape[0], 0), float("inf"))
    best_i = torch.zeros(queries.shape[0], 0, dtype=torch.long, device=queries.device)
    for start in range(0, num_codes, chunk):
        block = codes[start:start + chunk]
        # |q - c|^2 - |q|^2 = |c|^2 - 2 q.c: one matrix product per chunk (|q|^2 is added back at the end)
        d = torch.addmm(block.pow(2).sum(1)[None], queries, block.T, alpha=-2.0)  # (B, chunk)
        if valid is not None:
            d = d.masked_fill(~valid[start:start + chunk], float("inf"))
        if exclude is not None:
            rows = exclude - start
            inside = (rows >= 0) & (rows < block.shape[0])
            if bool(inside.any()):
                d[inside.nonzero().flatten(), rows[inside]] = float("inf")
        d, i = _smallest(d, min(k, block.shape[0]))
        best_d, best_i = torch.cat([best_d, d], 1), torch.cat([best_i, i + start], 1)
        if best_d.shape[1] > k:
            best_d, pick = best_d.topk(k, dim=1, largest=False)
            best_i = best_i.gather(1, pick)
    order = best_d.argsort(1)  # nearest first
    best_d = (best_d.gather(1, order) + queries.pow(2).sum(1, keepdim=True)).clamp(min=0)
    return best_d, best_i.gather(1, order)


def _smallest(d: torch.Tensor, k: int, group: int = 32) -> Tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` smallest entries of each row of ``d`` ``(B, N)`` and their columns, exactly, in two
    stages: the minimum of each group of ``group`` columns, the ``k`` groups with the smallest
    minima (every one of the ``k`` smallest entries lies in one of them: a group holding one has
    its minimum at or below the k-th smallest, and at most ``k`` groups do), then ``topk`` over
    those ``k * group`` candidates. A few times faster than ``topk`` over all ``N`` on a CPU."""
    rows, cols = d.shape
    if cols <= 4 * group * k:
        return d.topk(k, dim=1, largest=False, sorted=False)
    pad = (-cols) % group
    if pad:
        d = torch.cat([d, d.new_full((rows, pad), float("inf"))], 1)
    groups = d.view(rows, -1, group)
    _, best_groups = groups.amin(-1).topk(k, dim=1, largest=False, sorted=False)  # (B, k)
    candidates = groups.gather(1, best_groups[..., None].expand(-1, -1, group)).reshape(rows, -1)
    values, at = candidates.topk(k, dim=1, largest=False, sorted=False)
    return values, best_groups.gather(1, at // group) * group + at % group


class CodeTable(nn.Module):
    """One code per training datapoint (posterior means), refreshed from each batch.

    :param int code_dim: Z. :param int capacity: rows to allocate at first (it grows as needed).

    >>> table = CodeTable(2)
    >>> table.update(torch.tensor([0, 2]), torch.tensor([[0.0, 0.0], [1.0, 1.0]]))
    >>> table.size, int(table.filled.sum())
    (3, 2)
    """

    def __init__(self, code_dim: int, capacity: int = 0, chunk: int = 16384):
        super().__init__()
        self.code_dim, self.chunk = code_dim, chunk
        self.register_buffer("codes", torch.zeros(capacity, code_dim))
        self.register_buffer("filled", torch.zeros(capacity, dtype=torch.bool))

    @property
    def size(self) -> int:
        return self.codes.shape[0]

    @property
    def num_filled(self) -> int:
        return int(self.filled.sum())

    def _grow(self, size: int) -> None:
        if size <= self.size:  # to exactly the largest index: in shuffled order it is reached within a few batches
            return
        codes = self.codes.new_zeros(size, self.code_dim)
        filled = self.filled.new_zeros(size)
        codes[:self.size], filled[:self.size] = self.codes, self.filled
        self.codes, self.filled = codes, filled

    @torch.no_grad()
    def update(self, index: torch.Tensor, codes: torch.Tensor) -> None:
        """Store ``codes`` ``(B, Z)`` as the rows ``index`` ``(B,)``."""
        index = index.to(self.codes.device).long().reshape(-1)
        if index.numel() and int(index.min()) < 0:
            raise ValueError("index must hold the rows' positions in the training set (>= 0)")
        if index.numel():
            self._grow(int(index.max()) + 1)
        self.codes[index] = codes.detach().to(self.codes.dtype).reshape(len(index), self.code_dim)
        self.filled[index] = True

    @torch.no_grad()
    def neighbours(self, queries: torch.Tensor, k: int, exclude: Optional[torch.Tensor] = None):
        """:func:`knn` of ``queries`` among the filled rows: ``(distances, rows)``, each ``(B, k)``."""
        valid = None if bool(self.filled.all()) else self.filled
        return knn(queries.detach().to(self.codes.dtype), self.codes, k, chunk=self.chunk, exclude=exclude,
                   valid=valid)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        codes = state_dict.get(prefix + "codes")
        if codes is not None and codes.shape != self.codes.shape:  # a saved table of another size
            self.codes = self.codes.new_zeros(codes.shape)
            self.filled = self.filled.new_zeros(codes.shape[:1])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
