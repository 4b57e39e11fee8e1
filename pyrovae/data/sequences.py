"""
Sequence data sets: text (``ptb``, ``debian-descriptions``) and music (``bach-chorales``).

Every split is a dict of tensors with one row per sequence, padded at the end:

- ``"x"``: the sequence. Text: int64 ``(N, T)`` token ids (each sentence ends with ``<eos>``
  unless it was cut at ``max_length``). Music: float32 ``(N, T, 88)`` piano rolls in {0, 1}.
- ``"mask"``: bool ``(N, T)``, True at the real steps ``t < lengths[n]``, False on padding.
- ``"lengths"``: int64 ``(N,)``, the real steps of each row (``mask.sum(1)``).
- ``"y"``: int64 ``(N,)``, the label, for ``debian-descriptions`` only (ids of :data:`SECTIONS`).

The pair receives these as keyword arguments like any batch key, so a model writes its
likelihood with ``.mask(mask)`` (or ``poutine.mask``) and the padding never enters the loss.
``T`` is the split's longest row, or ``max_length`` where one is set. Padding is ``<pad>``
(id 0) for text and zeros for music. Splits keep the files' order; nothing is random.

A text data set carries its :class:`Vocab` as ``dataset.vocab``, built from the training split
only: ``dataset.vocab.decode(ids)`` turns ids back into text, ``vocab.save(path)`` /
:meth:`Vocab.load` keep it beside a run. :meth:`SequenceDataSet.bucketed` gives a
length-bucketed :class:`~torch.utils.data.DataLoader` (batches of similar lengths, padded only
to the batch's longest row) that :func:`~pyrovae.fit` takes as its ``data``.

Files are found through :func:`~pyrovae.data.datasets.search_paths` (``data_dir``, then
``$PYROVAE_DATA``, ...) and their checksums (those of each folder's README) are verified.
"""

from __future__ import annotations

import collections
import dataclasses
import gzip
import hashlib
import json
import math
import re
import zipfile
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from pyrovae.data.datasets import DataFormatError, DataSet, _find_files, register_dataset
from pyrovae.data.sources import SEED_STRIDE, RowBatch

__all__ = ["PAD", "BOS", "EOS", "UNK", "SECTIONS", "PIANO_KEYS", "Vocab", "SequenceDataSet", "BucketSampler",
           "BucketLoader", "tokenize", "pad_sequences", "load_ptb", "load_debian_descriptions",
           "load_bach_chorales"]

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIALS = (PAD, BOS, EOS, UNK)  # ids 0, 1, 2, 3 in every vocabulary
#: The 14 Debian sections of ``debian-descriptions``; a label ``y`` is an index into this tuple.
SECTIONS = ("admin", "database", "editors", "electronics", "games", "graphics", "mail", "math", "net",
            "science", "sound", "text", "video", "web")
PIANO_KEYS = 88  # MIDI pitches 21..108

_WORD = re.compile(r"<(?:pad|bos|eos|unk)>|[^\W_]+(?:[-'.][^\W_]+)*|[^\w\s]")
TOKENIZERS = ("whitespace", "lower-words")

# the checksums of the READMEs (md5 of the uncompressed text for ptb, so re-compressing is fine)
_PTB_MD5 = {"train": "f26c4b92c5fdc7b3f8c7cdcb991d8420", "valid": "aa0affc06ff7c36e977d7cd49e3839bf",
            "test": "8b80168b89c18661a38ef683c0dc3721"}
_DEBIAN_MD5 = {"labelled": "53b30a80b39afae2b68502c2000641bb", "unlabelled": "a1afa0b0c8d79ece74c64e2790c27cf7"}
_CHORALES_MD5 = "89dd4461f2f30c1737f707b7f30c0fd5"


def tokenize(text: str, tokenizer: str = "lower-words") -> list[str]:
    """
    Split ``text`` into tokens. ``"whitespace"``: split on white space, as given (PTB is
    already tokenized and lower-cased). ``"lower-words"``: lower-case, then runs of letters
    and digits (joined by ``-``, ``'`` or ``.`` inside a word: ``real-time``, ``don't``,
    ``2.0``), the specials (``<unk>``, ...) whole, and each other non-space character alone.

    >>> tokenize("Real-time strategy (RTS) game, v2.0.")
    ['real-time', 'strategy', '(', 'rts', ')', 'game', ',', 'v2.0', '.']
    """
    if tokenizer == "whitespace":
        return text.split()
    if tokenizer == "lower-words":
        return _WORD.findall(text.lower())
    raise ValueError(f"unknown tokenizer {tokenizer!r}; choose one of {list(TOKENIZERS)}")


class Vocab:
    """
    Token <-> id tables. Ids 0-3 are ``<pad>``, ``<bos>``, ``<eos>``, ``<unk>``; then the words,
    most frequent first (ties in alphabetical order). A token not in the table encodes as
    ``<unk>``.

    :param tokens: every token, in id order, starting with :data:`SPECIALS`.
    :param str tokenizer: how :meth:`encode` splits a string (see :func:`tokenize`).

    >>> vocab = Vocab.build([["a", "b", "a"]], tokenizer="whitespace")
    >>> vocab.encode("a c"), vocab.decode([4, 3, 2, 0])
    ([4, 3, 2], 'a <unk>')
    """

    pad_id, bos_id, eos_id, unk_id = 0, 1, 2, 3

    def __init__(self, tokens: Sequence[str], tokenizer: str = "whitespace"):
        tokens = list(tokens)
        if tuple(tokens[:4]) != SPECIALS:
            raise ValueError(f"a vocabulary starts with {list(SPECIALS)}, got {tokens[:4]}")
        if len(set(tokens)) != len(tokens):
            raise ValueError("a vocabulary lists each token once")
        tokenize("", tokenizer)  # an unknown tokenizer fails here
        self.tokens, self.tokenizer = tokens, tokenizer
        self.index = {token: i for i, token in enumerate(tokens)}

    @classmethod
    def build(cls, token_lists: Iterable[Sequence[str]], max_size: int | None = None,
              tokenizer: str = "whitespace") -> "Vocab":
        """The vocabulary of ``token_lists`` (the training split): the specials, then the
        ``max_size - 4`` most frequent other tokens (all for ``None``)."""
        counts = collections.Counter(token for tokens in token_lists for token in tokens)
        for special in SPECIALS:
            counts.pop(special, None)
        words = sorted(counts, key=lambda token: (-counts[token], token))
        if max_size is not None:
            if type(max_size) is not int or max_size <= len(SPECIALS):
                raise ValueError(f"vocab_size must be an int above {len(SPECIALS)} (the specials), got {max_size!r}")
            words = words[:max_size - len(SPECIALS)]
        return cls(list(SPECIALS) + words, tokenizer)

    def __len__(self) -> int:
        return len(self.tokens)

    def __eq__(self, other) -> bool:
        return isinstance(other, Vocab) and self.tokens == other.tokens and self.tokenizer == other.tokenizer

    def __repr__(self) -> str:
        return f"Vocab({len(self)} tokens, tokenizer={self.tokenizer!r})"

    def ids(self, tokens: Iterable[str]) -> list[int]:
        """The ids of ``tokens`` (``<unk>`` for unknown ones)."""
        return [self.index.get(token, self.unk_id) for token in tokens]

    def encode(self, text: str, eos: bool = True) -> list[int]:
        """The ids of ``text``, tokenized with the vocabulary's tokenizer, ending with ``<eos>``."""
        return self.ids(tokenize(text, self.tokenizer)) + ([self.eos_id] if eos else [])

    def decode(self, ids, stop_at_eos: bool = True):
        """
        Text from ids: tokens joined by spaces, ``<pad>`` and ``<bos>`` left out, cut at the
        first ``<eos>`` (unless ``stop_at_eos=False``). ``ids`` is a list or 1-D tensor (one
        string) or a 2-D tensor / list of lists (a list of strings).
        """
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        if ids and isinstance(ids[0], (list, tuple)):
            return [self.decode(row, stop_at_eos) for row in ids]
        words = []
        for i in ids:
            i = int(i)
            if i == self.eos_id and stop_at_eos:
                break
            if i in (self.pad_id, self.bos_id):
                continue
            words.append(self.tokens[i] if 0 <= i < len(self.tokens) else UNK)
        return " ".join(words)

    def to_dict(self) -> dict:
        return {"tokens": self.tokens, "tokenizer": self.tokenizer}

    def save(self, path) -> None:
        """Write the vocabulary as JSON (``{"tokens": [...], "tokenizer": ...}``)."""
        Path(path).write_text(json.dumps(self.to_dict()), encoding="utf-8")

    @classmethod
    def load(cls, path) -> "Vocab":
        """A vocabulary written by :meth:`save`."""
        saved = json.loads(Path(path).read_text(encoding="utf-8"))
        return cls(saved["tokens"], saved["tokenizer"])


def pad_sequences(rows: Sequence[Sequence], max_length: int | None = None, pad=0,
                  dtype=torch.int64) -> dict[str, torch.Tensor]:
    """
    ``{"x", "mask", "lengths"}`` of variable-length rows (lists of ids, or ``(T_n, ...)``
    arrays), padded at the end with ``pad`` to the longest row or cut to ``max_length``.

    >>> batch = pad_sequences([[5, 6, 2], [7, 2]])
    >>> batch["x"].tolist(), batch["mask"].tolist(), batch["lengths"].tolist()
    ([[5, 6, 2], [7, 2, 0]], [[True, True, True], [True, True, False]], [3, 2])
    """
    lengths = [len(row) if max_length is None else min(len(row), max_length) for row in rows]
    if not rows or min(lengths) < 1:
        raise ValueError("pad_sequences needs at least one row, each with at least one step")
    width = max(lengths)
    flat = np.concatenate([np.asarray(row[:length]) for row, length in zip(rows, lengths)])
    lengths = torch.tensor(lengths, dtype=torch.int64)
    mask = torch.arange(width) < lengths[:, None]
    x = torch.full((len(rows), width, *flat.shape[1:]), pad, dtype=dtype)
    x[mask] = torch.from_numpy(flat).to(dtype)  # row-major: row 0's steps, then row 1's, ...
    return {"x": x, "mask": mask, "lengths": lengths}


@dataclasses.dataclass
class SequenceDataSet(DataSet):
    """
    A :class:`~pyrovae.data.datasets.DataSet` of padded sequences: each split is
    ``{"x", "mask", "lengths"}`` (and ``"y"`` where labelled), see the module's docstring.
    ``image_shape`` is one time step's shape: ``(88,)`` for piano rolls, ``(V,)`` (one-hot)
    for text.

    :ivar Vocab vocab: the text's vocabulary (None for music).
    :ivar dict unlabelled: the unlabelled pool as a split without ``y`` (debian), or None.
    :ivar tuple classes: the label names, ``y`` indexing them, or None.
    :ivar dict names: each split's row names (the chorales' files), or None.
    """

    vocab: Vocab | None = None
    unlabelled: dict | None = None
    classes: tuple | None = None
    names: dict | None = None

    def __post_init__(self):
        splits = [("train", self.train), ("valid", self.valid), ("test", self.test)]
        if self.unlabelled is not None:
            splits.append(("unlabelled", self.unlabelled))
        for split_name, split in splits:
            missing = {"x", "mask", "lengths"} - set(split)
            if missing:
                raise ValueError(f"{self.name} {split_name}: a sequence split needs x, mask and lengths; "
                                 f"{sorted(missing)} missing")
            x, mask, lengths = split["x"], split["mask"], split["lengths"]
            if mask.dtype != torch.bool or mask.shape != x.shape[:2] or lengths.shape != x.shape[:1]:
                raise ValueError(f"{self.name} {split_name}: x {tuple(x.shape)}, mask {tuple(mask.shape)} "
                                 f"{mask.dtype} and lengths {tuple(lengths.shape)} disagree: mask is (N, T) bool, "
                                 f"lengths (N,)")
            if tuple(x.shape[2:]) != (tuple(self.image_shape) if self.vocab is None else ()):
                raise ValueError(f"{self.name} {split_name}: x has steps of shape {tuple(x.shape[2:])}, "
                                 f"expected {self.image_shape if self.vocab is None else '() (token ids)'}")

    @property
    def x_dim(self) -> int:
        """The size of one step: the vocabulary (text) or the 88 keys (music)."""
        return len(self.vocab) if self.vocab is not None else math.prod(self.image_shape)

    def dims(self) -> dict:
        """The sizes to build a pair with: ``{"vocab_size": V}`` (text) or ``{"x_dim": 88}``
        (music), with ``num_classes`` where labelled."""
        dims = {"vocab_size": len(self.vocab)} if self.vocab is not None else {"x_dim": self.x_dim}
        if self.num_classes is not None:
            dims["num_classes"] = self.num_classes
        return dims

    def to(self, device) -> "SequenceDataSet":
        def move(split):
            return None if split is None else {key: value.to(device) for key, value in split.items()}
        return dataclasses.replace(self, train=move(self.train), valid=move(self.valid), test=move(self.test),
                                   unlabelled=move(self.unlabelled))

    def split(self, name: str) -> dict:
        """``"train"``, ``"valid"``, ``"test"`` or ``"unlabelled"``."""
        chosen = getattr(self, name, None) if name in ("train", "valid", "test", "unlabelled") else None
        if chosen is None:
            raise ValueError(f"{self.name} has no split {name!r}")
        return chosen

    def bucketed(self, split: str = "train", batch_size: int = 64, *, shuffle: bool = True, seed: int = 0,
                 pool: int = 50, drop_last: bool = False) -> "BucketLoader":
        """
        A DataLoader of ``split`` in batches of similar lengths, each cut to its longest row
        (``x`` and ``mask`` ``(B, T_batch)``). See :class:`BucketSampler`; pass it as
        :func:`~pyrovae.fit`'s ``data`` (its batch size replaces fit's) with
        ``valid_data=dataset.valid``.
        """
        rows = _Rows(self.split(split))
        sampler = BucketSampler(rows.split["lengths"], batch_size, shuffle=shuffle, seed=seed, pool=pool,
                                drop_last=drop_last)
        return BucketLoader(rows, batch_sampler=sampler, collate_fn=_as_dict)


def _as_dict(batch):
    return dict(batch)


class _Rows(Dataset):
    """A split's rows; a list of indices gives one batch cut to its longest row."""

    def __init__(self, split: dict):
        self.split = split
        self.width = split["mask"].shape[1]

    def __len__(self):
        return len(self.split["lengths"])

    def __getitem__(self, index):
        return self.__getitems__([index])

    def __getitems__(self, indices):
        index = torch.as_tensor(indices, dtype=torch.int64)
        longest = int(self.split["lengths"][index].max())
        return RowBatch({key: (value[index][:, :longest] if value.dim() >= 2 and value.shape[1] == self.width
                               else value[index]) for key, value in self.split.items()})


class BucketSampler(Sampler):
    """
    Batches of rows of similar length, deterministic in ``(seed, epoch)``: the rows are
    permuted (``torch.randperm`` seeded ``seed * 1_000_003 + epoch``, as fit seeds an epoch),
    cut into pools of ``pool * batch_size`` rows, each pool sorted by length (stably) and cut
    into batches, and the batches shuffled. Unshuffled: rows in order of length. Every row is
    in exactly one batch; there are ``ceil(N / batch_size)`` batches (``floor`` with ``drop_last``).
    """

    def __init__(self, lengths: torch.Tensor, batch_size: int, *, shuffle: bool = True, seed: int = 0,
                 pool: int = 50, drop_last: bool = False):
        if type(batch_size) is not int or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        if type(pool) is not int or pool < 1:
            raise ValueError(f"pool must be a positive int (batches per sorted pool), got {pool!r}")
        self.lengths = torch.as_tensor(lengths).cpu()
        self.batch_size, self.shuffle, self.seed, self.pool, self.drop_last = batch_size, shuffle, seed, pool, drop_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        n = len(self.lengths)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self):
        n = len(self.lengths)
        if not self.shuffle:
            order = torch.sort(self.lengths, stable=True).indices
            batches = [order[i:i + self.batch_size] for i in range(0, n, self.batch_size)]
        else:
            generator = torch.Generator().manual_seed(self.seed * SEED_STRIDE + self.epoch)
            order = torch.randperm(n, generator=generator)
            size = self.pool * self.batch_size
            batches = []
            for start in range(0, n, size):
                part = order[start:start + size]
                part = part[torch.sort(self.lengths[part], stable=True).indices]
                batches += [part[i:i + self.batch_size] for i in range(0, len(part), self.batch_size)]
            batches = [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
        for batch in batches:
            if self.drop_last and len(batch) < self.batch_size:
                continue
            yield batch.tolist()


class BucketLoader(DataLoader):
    """A DataLoader over a :class:`BucketSampler`; fit calls :meth:`set_epoch` each epoch."""

    def set_epoch(self, epoch: int) -> None:
        self.batch_sampler.set_epoch(epoch)


# ---------------------------------------------------------------------------------------------- files

def _file_md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _check_md5(path: Path, found: str, expected: str, what: str = "") -> None:
    if found != expected:
        raise DataFormatError(f"{path}: md5{what} {found} is not the README's {expected}: the file is corrupt, "
                              f"truncated or another version; copy it again")


def _read_text(path: Path, expected_md5: str | None = None) -> str:
    """A UTF-8 text file, gunzipped where it is named ``*.gz``, its uncompressed md5 checked."""
    try:
        raw = gzip.open(path).read() if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError) as error:
        raise DataFormatError(f"{path}: cannot be read: {error}") from error
    if expected_md5 is not None:
        _check_md5(path, hashlib.md5(raw).hexdigest(), expected_md5, " (uncompressed)")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise DataFormatError(f"{path}: not UTF-8 text: {error}") from error


def _lines(text: str) -> list[str]:
    lines = text.split("\n")
    return lines[:-1] if lines and lines[-1] == "" else lines


def _check_binarize_fixed(name, binarize, valid_size, allowed):
    if binarize not in (None, allowed):
        raise ValueError(f"{name} is not images: binarize={binarize!r} cannot apply; leave it unset")
    if valid_size is not None:
        raise ValueError(f"{name} has a fixed split; leave valid_size unset")


def _text_splits(token_lists: dict, vocab: Vocab, max_length: int | None, eos: bool = True) -> dict:
    return {name: pad_sequences([vocab.ids(tokens) + ([vocab.eos_id] if eos else []) for tokens in rows],
                                max_length, pad=vocab.pad_id)
            for name, rows in token_lists.items()}


def _check_max_length(max_length):
    if max_length is not None and (type(max_length) is not int or max_length < 1):
        raise ValueError(f"max_length must be a positive int or None (the split's longest), got {max_length!r}")


def load_ptb(data_dir=None, max_length: int | None = None) -> SequenceDataSet:
    """
    The Penn Treebank language-modelling text (Mikolov's): 42,068 / 3,370 / 3,761 sentences,
    a vocabulary of 10,000 (its 9,999 words with ``<unk>``, plus ``<eos>``) and ``<pad>``,
    ``<bos>``: 10,002 ids. Each row is a sentence and its ``<eos>``; ``max_length`` cuts longer
    rows (no cut by default: the longest train sentence is 83 tokens with ``<eos>``).
    """
    _check_max_length(max_length)
    layout = {part: (f"ptb.{part}.txt.gz", f"ptb.{part}.txt") for part in ("train", "valid", "test")}
    paths = _find_files("ptb", [layout], data_dir, "They are Mikolov's ptb.{train,valid,test}.txt (gzipped or not).")
    tokens = {part: [line.split() for line in _lines(_read_text(path, _PTB_MD5[part]))]
              for part, path in paths.items()}
    vocab = Vocab.build(tokens["train"], tokenizer="whitespace")
    splits = _text_splits(tokens, vocab, max_length)
    return SequenceDataSet("ptb", splits["train"], splits["valid"], splits["test"], (len(vocab),), "none",
                           vocab=vocab)


def _read_tsv(path: Path, columns: tuple, expected_md5: str) -> list[list[str]]:
    _check_md5(path, _file_md5(path), expected_md5)
    lines = _lines(_read_text(path))
    if not lines or tuple(lines[0].split("\t")) != columns:
        raise DataFormatError(f"{path}: expected a header line {chr(9).join(columns)!r}, got {lines[:1]}")
    rows = [line.split("\t") for line in lines[1:]]
    for number, row in enumerate(rows, start=2):
        if len(row) != len(columns):
            raise DataFormatError(f"{path}: line {number} has {len(row)} tab-separated fields, expected {len(columns)}")
    return rows


def load_debian_descriptions(data_dir=None, vocab_size: int | None = 10000, max_length: int | None = 128,
                             unlabelled: bool = True) -> SequenceDataSet:
    """
    Debian 12 package descriptions labelled with their section (:data:`SECTIONS`, ``y``):
    5,609 / 1,221 / 1,206 texts, and ``dataset.unlabelled``, 31,710 texts of other sections
    (``unlabelled=False`` skips reading them). Tokenized by :func:`tokenize` (``"lower-words"``);
    the vocabulary is the specials and the most frequent words of the labelled train split,
    ``vocab_size`` ids in all (``None``: every train word). Rows end with ``<eos>``; a text
    longer than ``max_length`` tokens (``None``: no cap) is cut there, without ``<eos>``.
    """
    _check_max_length(max_length)
    layout = {"labelled": ("labelled.tsv.gz",)}
    if unlabelled:
        layout["unlabelled"] = ("unlabelled.tsv.gz",)
    paths = _find_files("debian_descriptions", [layout], data_dir,
                        "They are labelled.tsv.gz and unlabelled.tsv.gz of the debian_descriptions data.")
    rows = _read_tsv(paths["labelled"], ("split", "section", "package", "text"), _DEBIAN_MD5["labelled"])
    parts = ("train", "valid", "test")
    tokens, labels, packages = ({part: [] for part in parts} for _ in range(3))
    class_ids = {section: i for i, section in enumerate(SECTIONS)}
    for number, (split, section, package, text) in enumerate(rows, start=2):
        if split not in tokens or section not in class_ids:
            raise DataFormatError(f"{paths['labelled']}: line {number}: split {split!r} / section {section!r} is not "
                                  f"one of {list(tokens)} / the 14 sections {list(SECTIONS)}")
        tokens[split].append(tokenize(text))
        labels[split].append(class_ids[section])
        packages[split].append(package)
    vocab = Vocab.build(tokens["train"], vocab_size, tokenizer="lower-words")
    splits = _text_splits(tokens, vocab, max_length)
    for split in splits:
        splits[split]["y"] = torch.tensor(labels[split], dtype=torch.int64)
    pool = None
    if unlabelled:
        pool_rows = _read_tsv(paths["unlabelled"], ("package", "text"), _DEBIAN_MD5["unlabelled"])
        pool = _text_splits({"pool": [tokenize(text) for _, text in pool_rows]}, vocab, max_length)["pool"]
        packages["unlabelled"] = [package for package, _ in pool_rows]
    return SequenceDataSet("debian-descriptions", splits["train"], splits["valid"], splits["test"], (len(vocab),),
                           "none", num_classes=len(SECTIONS), vocab=vocab, unlabelled=pool, classes=SECTIONS,
                           names=packages)


def load_bach_chorales(data_dir=None) -> SequenceDataSet:
    """
    350 Bach chorales as 88-key piano rolls, one row per beat: 213 / 69 / 68 chorales of
    11,547 / 4,007 / 3,474 beats; ``x`` float32 ``(N, T, 88)`` in {0, 1}, ``T`` the split's
    longest chorale; ``dataset.names`` the corpus file of each.
    """
    paths = _find_files("bach_chorales", [{"npz": ("bach_chorales.npz",)}], data_dir,
                        "It is bach_chorales.npz of the bach_chorales data (its extract.py rebuilds it).")
    path = paths["npz"]
    _check_md5(path, _file_md5(path), _CHORALES_MD5)
    parts = ("train", "valid", "test")
    keys = [f"{part}{suffix}" for part in parts for suffix in ("", "_lengths", "_names")]
    try:
        with np.load(path) as npz:
            arrays = {key: npz[key] for key in keys}
    except (KeyError, ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
        raise DataFormatError(f"{path}: expected an .npz of arrays {keys} without pickled objects: {error}") from error
    splits, names = {}, {}
    for part in parts:
        roll, lengths = arrays[part], arrays[f"{part}_lengths"].astype(np.int64)
        if roll.ndim != 2 or roll.shape[1] != PIANO_KEYS or lengths.sum() != len(roll) or (lengths < 1).any():
            raise DataFormatError(f"{path}: {part} has shape {roll.shape} and lengths summing to {lengths.sum()}; "
                                  f"expected (beats, {PIANO_KEYS}) cut by positive lengths summing to the beats")
        if roll.max(initial=0) > 1:
            raise DataFormatError(f"{path}: {part} holds values other than 0 and 1")
        pieces = np.split(roll, np.cumsum(lengths)[:-1])
        splits[part] = pad_sequences(pieces, pad=0, dtype=torch.float32)
        names[part] = [str(name) for name in arrays[f"{part}_names"]]
    return SequenceDataSet("bach-chorales", splits["train"], splits["valid"], splits["test"], (PIANO_KEYS,),
                           "static", names=names)


@register_dataset("ptb")
def _load_ptb(data_dir, binarize, valid_size) -> SequenceDataSet:
    """Penn Treebank sentences (Mikolov's text), token ids with <eos>, mask and lengths; vocab 10,002."""
    _check_binarize_fixed("ptb", binarize, valid_size, "none")
    return load_ptb(data_dir)


@register_dataset("debian-descriptions")
def _load_debian(data_dir, binarize, valid_size) -> SequenceDataSet:
    """Debian package descriptions in 14 sections (y), token ids, mask, lengths; .unlabelled the pool."""
    _check_binarize_fixed("debian-descriptions", binarize, valid_size, "none")
    return load_debian_descriptions(data_dir)


@register_dataset("bach-chorales")
def _load_chorales(data_dir, binarize, valid_size) -> SequenceDataSet:
    """Bach chorales as (N, T, 88) binary piano rolls with mask and lengths, one step a beat."""
    _check_binarize_fixed("bach-chorales", binarize, valid_size, "static")
    return load_bach_chorales(data_dir)
