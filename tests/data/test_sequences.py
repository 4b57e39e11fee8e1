"""The sequence data sets (ptb, debian-descriptions, bach-chorales): counts against their READMEs,
masks against lengths, padding that never reaches a masked likelihood, the vocabulary's round
trips, length buckets, and one-line errors for missing or corrupt files."""

import gzip
import os
import shutil
from pathlib import Path

import pyro
import pyro.distributions as dist
import pytest
import torch

import pyrovae  # noqa: F401  (registers the data sets)
from pyrovae.data import DataFormatError, DataNotFoundError, list_datasets, load_dataset
from pyrovae.data.sequences import (SECTIONS, BucketSampler, Vocab, load_debian_descriptions, pad_sequences,
                                    tokenize)
from tests.cli.helpers import one_line_error, pyrovae as run_cli

ROOTS = [Path(root) for root in os.environ.get("PYROVAE_DATA", "").split(os.pathsep) if root]


def folder(name):
    found = next((root / name for root in ROOTS if (root / name).is_dir()), None)
    if found is None:
        pytest.skip(f"$PYROVAE_DATA has no {name}/ folder")
    return found


@pytest.fixture(scope="module")
def ptb():
    folder("ptb")
    return load_dataset("ptb")


@pytest.fixture(scope="module")
def debian():
    folder("debian_descriptions")
    return load_dataset("debian-descriptions")


@pytest.fixture(scope="module")
def chorales():
    folder("bach_chorales")
    return load_dataset("bach-chorales")


def check_masks(split, pad=0):
    x, mask, lengths = split["x"], split["mask"], split["lengths"]
    assert mask.dtype == torch.bool and lengths.dtype == torch.int64
    assert torch.equal(mask, torch.arange(x.shape[1]) < lengths[:, None])
    assert int(lengths.max()) == x.shape[1] and int(lengths.min()) >= 1
    assert bool((x[~mask] == pad).all())


def test_registered():
    assert {"ptb", "debian-descriptions", "bach-chorales"} <= set(list_datasets())


def test_ptb_counts_vocabulary_and_no_oov(ptb):
    assert [len(getattr(ptb, s)["x"]) for s in ("train", "valid", "test")] == [42068, 3370, 3761]
    # tokens with one <eos> a line, as the README counts them
    assert [int(getattr(ptb, s)["lengths"].sum()) for s in ("train", "valid", "test")] == [929589, 73760, 82430]
    vocab = ptb.vocab
    assert len(vocab) == 10002 and vocab.tokens[:4] == ["<pad>", "<bos>", "<eos>", "<unk>"]
    assert ptb.dims() == {"vocab_size": 10002}
    for split in (ptb.train, ptb.valid, ptb.test):
        check_masks(split, pad=vocab.pad_id)
        x, lengths = split["x"], split["lengths"]
        assert bool((x[torch.arange(len(x)), lengths - 1] == vocab.eos_id).all())  # every row ends with <eos>
        assert int((x == vocab.eos_id).sum()) == len(x)
    text = gzip.open(folder("ptb") / "ptb.valid.txt.gz", "rt").read().splitlines()
    words = {word for line in text for word in line.split()}
    assert words <= set(vocab.tokens)  # no out-of-vocabulary word in valid...
    test_words = {w for line in gzip.open(folder("ptb") / "ptb.test.txt.gz", "rt") for w in line.split()}
    assert test_words <= set(vocab.tokens)  # ... nor in test
    assert vocab.decode(ptb.valid["x"]) == [" ".join(line.split()) for line in text]  # ids decode to the file


def test_debian_counts_labels_and_pool(debian):
    assert [len(getattr(debian, s)["x"]) for s in ("train", "valid", "test")] == [5609, 1221, 1206]
    assert debian.num_classes == 14 and debian.classes == SECTIONS and len(set(SECTIONS)) == 14
    assert debian.dims() == {"vocab_size": 10000, "num_classes": 14}
    counts = torch.bincount(debian.train["y"], minlength=14)
    assert int(counts[SECTIONS.index("net")]) == 918 and int(counts[SECTIONS.index("video")]) == 101
    assert int(counts.min()) == 101 and int(counts.max()) == 918
    assert len(debian.unlabelled["x"]) == 31710 and "y" not in debian.unlabelled
    for split in (debian.train, debian.valid, debian.test, debian.unlabelled):
        check_masks(split, pad=debian.vocab.pad_id)
        assert split["x"].shape[1] <= 128
    assert debian.names["train"][:1] and len(debian.names["unlabelled"]) == 31710


def test_debian_vocab_size_option_and_train_only_vocabulary():
    folder("debian_descriptions")
    small = load_debian_descriptions(vocab_size=500, max_length=None, unlabelled=False)
    assert len(small.vocab) == 500 and small.unlabelled is None
    assert small.train["x"].shape[1] == int(small.train["lengths"].max()) > 128  # no cap: the longest row
    assert int(small.train["x"].max()) == 499
    # the most frequent train words, most frequent first
    counts = torch.bincount(small.train["x"][small.train["mask"]], minlength=500)[4:]
    assert bool((counts[:-1] >= counts[1:]).all())


def test_chorales_counts_and_rolls(chorales):
    assert [len(getattr(chorales, s)["x"]) for s in ("train", "valid", "test")] == [213, 69, 68]
    assert [int(getattr(chorales, s)["lengths"].sum()) for s in ("train", "valid", "test")] == [11547, 4007, 3474]
    assert chorales.dims() == {"x_dim": 88} and chorales.binary
    for split in (chorales.train, chorales.valid, chorales.test):
        x = split["x"]
        assert x.dtype == torch.float32 and x.shape[2] == 88
        check_masks(split)
        assert set(x.unique().tolist()) <= {0.0, 1.0}
    assert float(chorales.train["x"].sum()) / 11547 == pytest.approx(3.90, abs=0.005)  # README: 3.90 a beat
    assert int(chorales.train["lengths"].min()) >= 24 and chorales.train["x"].shape[1] <= 193
    assert chorales.names["train"][0] == "bach/bwv347"


def bigram_log_likelihood(x, mask, logits, categorical=True):
    """A toy masked sequence model: x_t ~ Categorical(logits[x_{t-1}]) (or per-key Bernoulli of
    a linear map of x_{t-1}), each step's site masked with ``mask[:, t]``; the traced log p(x)."""
    def model(x, mask):
        previous = torch.zeros_like(x[:, 0]) if categorical else torch.zeros_like(x[:, 0])
        with pyro.plate("rows", x.shape[0]):
            for t in pyro.markov(range(x.shape[1])):
                if categorical:
                    step = dist.Categorical(logits=logits[previous])
                else:
                    step = dist.Bernoulli(logits=previous @ logits).to_event(1)
                pyro.sample(f"x_{t}", step.mask(mask[:, t]), obs=x[:, t])
                previous = x[:, t]
    return pyro.poutine.trace(model).get_trace(x, mask).log_prob_sum()


def test_padding_never_reaches_a_masked_likelihood(ptb, chorales):
    torch.manual_seed(0)
    text = {k: v[:64] for k, v in ptb.valid.items()}
    logits = torch.randn(len(ptb.vocab), len(ptb.vocab))
    base = bigram_log_likelihood(text["x"], text["mask"], logits)
    noisy = text["x"].clone()
    noisy[~text["mask"]] = torch.randint(0, len(ptb.vocab), (int((~text["mask"]).sum()),))
    assert float(bigram_log_likelihood(noisy, text["mask"], logits)) == pytest.approx(float(base), rel=1e-6)
    changed = text["x"].clone()
    changed[0, 0] = (changed[0, 0] + 1) % len(ptb.vocab)  # a real token does count
    assert abs(float(bigram_log_likelihood(changed, text["mask"], logits) - base)) > 1e-3
    # the same with the padded rows dropped: the sum over the real steps alone
    by_row = sum(float(bigram_log_likelihood(text["x"][n:n + 1, :int(text["lengths"][n])],
                                             text["mask"][n:n + 1, :int(text["lengths"][n])], logits))
                 for n in range(4))
    first4 = bigram_log_likelihood(text["x"][:4], text["mask"][:4], logits)
    assert float(first4) == pytest.approx(by_row, rel=1e-5)

    rolls = chorales.test
    weights = torch.randn(88, 88) * 0.1
    base = bigram_log_likelihood(rolls["x"], rolls["mask"], weights, categorical=False)
    noisy = rolls["x"].clone()
    noisy[~rolls["mask"]] = torch.bernoulli(torch.full_like(noisy[~rolls["mask"]], 0.5))
    assert float(bigram_log_likelihood(noisy, rolls["mask"], weights, categorical=False)) == \
        pytest.approx(float(base), rel=1e-6)


def test_vocab_round_trips(ptb, debian, tmp_path):
    line = "the company said N shares were sold to <unk> investors"
    assert ptb.vocab.decode(ptb.vocab.encode(line)) == line
    assert ptb.vocab.encode(line)[-1] == ptb.vocab.eos_id
    assert ptb.vocab.decode(ptb.vocab.encode("the zzzunseen word")) == "the <unk> word"
    text = "Real-time strategy game, for the desktop. It is FREE software."
    ids = debian.vocab.encode(text)
    assert debian.vocab.decode(ids) == " ".join(tokenize(text))
    assert debian.vocab.encode(debian.vocab.decode(ids)) == ids  # decoding then encoding is the identity
    for n in range(20):  # rows with <unk>s, ending with <eos> (not cut at max_length)
        row, mask = debian.train["x"][n], debian.train["mask"][n]
        if row[mask][-1] == debian.vocab.eos_id:
            assert debian.vocab.encode(debian.vocab.decode(row)) == row[mask].tolist()
    for vocab in (ptb.vocab, debian.vocab):
        vocab.save(tmp_path / "vocab.json")
        assert Vocab.load(tmp_path / "vocab.json") == vocab


def test_pad_sequences_and_buckets():
    batch = pad_sequences([[5, 6, 2], [7, 2], [8, 9, 9, 2]], max_length=3)
    assert batch["x"].tolist() == [[5, 6, 2], [7, 2, 0], [8, 9, 9]] and batch["lengths"].tolist() == [3, 2, 3]
    lengths = torch.randint(1, 50, (103,), generator=torch.Generator().manual_seed(0))
    sampler = BucketSampler(lengths, 8, seed=3, pool=4)
    sampler.set_epoch(1)
    first, again = list(sampler), list(sampler)
    assert first == again and len(first) == len(sampler) == 13  # deterministic in (seed, epoch)
    assert sorted(i for b in first for i in b) == list(range(103))  # every row once
    sampler.set_epoch(2)
    assert list(sampler) != first
    # sorted pools: batches spread over far fewer lengths than random ones
    spread = sum(int(lengths[b].max() - lengths[b].min()) for b in first) / len(first)
    assert spread < 20  # random batches of 8 such lengths span about 38


def test_bucketed_loader_cuts_batches_to_their_longest_row(ptb):
    loader = ptb.bucketed("valid", batch_size=64, seed=0)
    batches = list(loader)
    assert len(batches) == len(loader) == 53
    assert sum(len(b["x"]) for b in batches) == 3370
    assert sum(int(b["lengths"].sum()) for b in batches) == 73760
    for batch in batches:
        assert batch["x"].shape == batch["mask"].shape == (len(batch["lengths"]), int(batch["lengths"].max()))
        assert torch.equal(batch["mask"], torch.arange(batch["x"].shape[1]) < batch["lengths"][:, None])
    assert sum(b["x"].numel() for b in batches) < 0.7 * ptb.valid["x"].numel()  # less padding than the split's


def test_missing_files_one_line_naming_them(tmp_path):
    for name, files in (("ptb", ["ptb.train.txt.gz", "ptb.valid.txt.gz", "ptb.test.txt.gz"]),
                        ("debian-descriptions", ["labelled.tsv.gz", "unlabelled.tsv.gz"]),
                        ("bach-chorales", ["bach_chorales.npz"])):
        with pytest.raises(DataNotFoundError) as error:
            load_dataset(name, data_dir=tmp_path)
        for file in files:
            assert file in str(error.value)
    done = run_cli("fit", "--data", "ptb", "--data-dir", tmp_path, "--epochs", "1", cwd=tmp_path)
    one_line_error(done, 1, "ptb.train.txt.gz", str(tmp_path))


def test_corrupt_files_name_the_file(tmp_path):
    source = folder("ptb")
    for part in ("valid", "test"):
        shutil.copy(source / f"ptb.{part}.txt.gz", tmp_path)
    lines = gzip.open(source / "ptb.train.txt.gz", "rt").read().splitlines()
    (tmp_path / "ptb.train.txt").write_text("\n".join(lines[:-1]) + "\n")  # one sentence short
    with pytest.raises(DataFormatError, match="ptb.train.txt: md5"):
        load_dataset("ptb", data_dir=tmp_path)
    folder("bach_chorales")
    (tmp_path / "bach_chorales.npz").write_bytes(b"not a zip")
    with pytest.raises(DataFormatError, match="bach_chorales.npz: md5"):
        load_dataset("bach-chorales", data_dir=tmp_path)


def test_options_refused(ptb):
    with pytest.raises(ValueError, match="not images"):
        load_dataset("ptb", binarize="dynamic")
    with pytest.raises(ValueError, match="fixed split"):
        load_dataset("bach-chorales", valid_size=10)
