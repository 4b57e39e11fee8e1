"""Source/target pairs from a text data set, for sequence-to-sequence models (models/seq2seq.py).

:func:`continuation_pairs` splits each sentence ``w_1 .. w_L <eos>`` in two: the source is the
first ``floor(L * split)`` words (at least one; no ``<eos>``), the target the remaining words
and the ``<eos>`` (at least one word before it). Sentences with fewer than 2 words are dropped.
A split becomes

- ``x``, ``mask``, ``lengths``: the targets (token ids, ``<pad>`` after the ``<eos>``), as a text
  data set's rows, so the sentence models' conventions hold;
- ``source``, ``source_mask``, ``source_lengths``: the sources, padded to their own longest.

Registered: ``ptb-continue`` (PTB, source the first half of each sentence, target the rest:
41,931 / 3,357 / 3,756 pairs of the 42,068 / 3,370 / 3,761 sentences). :meth:`Seq2SeqDataSet.bucketed`
batches by target length and cuts both halves of each batch to their longest rows.
"""

from __future__ import annotations

import dataclasses

import torch

from pyrovae.data.datasets import register_dataset
from pyrovae.data.sequences import BucketLoader, BucketSampler, SequenceDataSet, _as_dict, _Rows, load_ptb
from pyrovae.data.sources import RowBatch

__all__ = ["Seq2SeqDataSet", "continuation_pairs", "load_ptb_continuation", "SOURCE_KEYS"]

SOURCE_KEYS = ("source", "source_mask", "source_lengths")


def continuation_pairs(split: dict, eos_id: int, fraction: float = 0.5) -> dict:
    """Source (the first ``fraction`` of each sentence's words) and target (the rest and
    ``<eos>``) of every sentence of a text split with at least 2 words (see the module's docstring)."""
    if not 0 < fraction < 1:
        raise ValueError(f"fraction (the source's share of a sentence's words) must be in (0, 1), got {fraction}")
    x, lengths = split["x"], split["lengths"]
    words = lengths - 1  # the <eos> is the last real token
    if not bool((x[torch.arange(len(x)), (lengths - 1).clamp(min=0)] == eos_id).all()):
        raise ValueError("continuation_pairs needs rows that end in <eos> (a text split from load_dataset)")
    keep = words >= 2
    x, lengths, words = x[keep], lengths[keep], words[keep]
    cut = (words.float() * fraction).floor().long().clamp(1, None)
    cut = torch.minimum(cut, words - 1)
    src_len, tgt_len = cut, lengths - cut
    steps = torch.arange(x.shape[1])
    source_mask = steps[: int(src_len.max())] < src_len[:, None]
    source = torch.where(source_mask, x[:, : source_mask.shape[1]], torch.zeros((), dtype=x.dtype))
    index = (cut[:, None] + steps[None, : int(tgt_len.max())]).clamp(max=x.shape[1] - 1)
    mask = steps[: int(tgt_len.max())] < tgt_len[:, None]
    target = torch.where(mask, x.gather(1, index), torch.zeros((), dtype=x.dtype))
    return {"x": target, "mask": mask, "lengths": tgt_len, "source": source, "source_mask": source_mask,
            "source_lengths": src_len}


class _PairRows(_Rows):
    """A batch of pairs cut to its longest target and its longest source."""

    def __getitems__(self, indices):
        index = torch.as_tensor(indices, dtype=torch.int64)
        target, source = int(self.split["lengths"][index].max()), int(self.split["source_lengths"][index].max())
        out = {}
        for key, value in self.split.items():
            value = value[index]
            if key in ("x", "mask"):
                value = value[:, :target]
            elif key in ("source", "source_mask"):
                value = value[:, :source]
            out[key] = value
        return RowBatch(out)


@dataclasses.dataclass
class Seq2SeqDataSet(SequenceDataSet):
    """A :class:`~pyrovae.data.sequences.SequenceDataSet` of source/target pairs: each split also
    holds ``source``, ``source_mask``, ``source_lengths``."""

    def __post_init__(self):
        super().__post_init__()
        for name in ("train", "valid", "test"):
            split = getattr(self, name)
            missing = set(SOURCE_KEYS) - set(split)
            if missing:
                raise ValueError(f"{self.name} {name}: a seq2seq split needs {SOURCE_KEYS}; {sorted(missing)} missing")

    def bucketed(self, split: str = "train", batch_size: int = 64, *, shuffle: bool = True, seed: int = 0,
                 pool: int = 50, drop_last: bool = False) -> BucketLoader:
        """Batches of similar target lengths, both halves cut to their longest rows."""
        rows = _PairRows(self.split(split))
        sampler = BucketSampler(rows.split["lengths"], batch_size, shuffle=shuffle, seed=seed, pool=pool,
                                drop_last=drop_last)
        return BucketLoader(rows, batch_sampler=sampler, collate_fn=_as_dict)


def load_ptb_continuation(data_dir=None, fraction: float = 0.5) -> Seq2SeqDataSet:
    """PTB sentences as (first ``fraction`` of the words, the rest and ``<eos>``) pairs."""
    ptb = load_ptb(data_dir)
    eos = ptb.vocab.eos_id
    splits = {name: continuation_pairs(getattr(ptb, name), eos, fraction) for name in ("train", "valid", "test")}
    return Seq2SeqDataSet("ptb-continue", splits["train"], splits["valid"], splits["test"], ptb.image_shape, "none",
                          vocab=ptb.vocab)


@register_dataset("ptb-continue")
def _load_ptb_continue(data_dir, binarize, valid_size) -> Seq2SeqDataSet:
    """PTB continuation pairs: source the first half of a sentence's words, target the rest and <eos>."""
    from pyrovae.data.sequences import _check_binarize_fixed

    _check_binarize_fixed("ptb-continue", binarize, valid_size, "none")
    return load_ptb_continuation(data_dir)
