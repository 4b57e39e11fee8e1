"""Batch sources: streamed and on-device paths give the same batches in fit's order; resume
with start=k is the tail of the epoch; items that are not tensors are refused in one line."""

import pytest
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset

from pyrovae.data import DataError, as_source, batches
from pyrovae.data.sources import default_max_bytes


class Rows(Dataset):
    """Row i is x = (i, i + 0.5, -i), y = i % 3; records the rows it was asked for."""

    classes = ["a", "b", "c"]

    def __init__(self, n=23, bad=None):
        self.n, self.bad, self.read = n, bad, []

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        self.read.append(i)
        if i == self.bad:
            return (torch.zeros(3), 1)
        return {"x": torch.tensor([i, i + 0.5, -i], dtype=torch.float32), "y": torch.tensor(i % 3)}


def tensors(n=23):
    i = torch.arange(n, dtype=torch.float32)
    return {"x": torch.stack([i, i + 0.5, -i], 1), "y": torch.arange(n) % 3}


def collect(source, batch_size=5, **kwargs):
    return [{k: v.clone() for k, v in b.items()} for b in source.epoch_batches(batch_size, **kwargs)]


def assert_equal_batches(a, b):
    assert len(a) == len(b)
    for left, right in zip(a, b):
        assert left.keys() == right.keys()
        for key in left:
            assert torch.equal(left[key], right[key]), key


@pytest.mark.parametrize("epoch", [0, 3])
def test_streamed_equals_on_device_equals_fit_batches(epoch):
    on_device = as_source(Rows(), "cpu")
    streamed = as_source(Rows(), "cpu", max_bytes=0)
    assert (on_device.mode, streamed.mode) == ("on-device", "streamed")
    fit_order = list(batches(tensors(), 5, shuffle=True, generator=torch.Generator().manual_seed(7 * 1_000_003 + epoch)))
    a = collect(on_device, shuffle=True, seed=7, epoch=epoch)
    b = collect(streamed, shuffle=True, seed=7, epoch=epoch)
    assert_equal_batches(a, b)
    assert_equal_batches(a, fit_order)
    assert [len(x["x"]) for x in a] == [5, 5, 5, 5, 3]
    assert sorted(torch.cat([x["x"][:, 0] for x in a]).tolist()) == list(range(23))
    assert a[0]["x"][:, 0].tolist() != list(range(5))  # shuffled
    assert_equal_batches(collect(on_device, shuffle=False), collect(streamed, shuffle=False))


def test_epochs_and_seeds_differ():
    source = as_source(Rows(), "cpu", max_bytes=0)
    first = collect(source, shuffle=True, seed=0, epoch=0)[0]["x"]
    assert not torch.equal(first, collect(source, shuffle=True, seed=0, epoch=1)[0]["x"])
    assert not torch.equal(first, collect(source, shuffle=True, seed=1, epoch=0)[0]["x"])


@pytest.mark.parametrize("max_bytes", [None, 0])
@pytest.mark.parametrize("start", [1, 4, 5])
def test_start_resumes_the_epoch_without_reading_earlier_rows(max_bytes, start):
    data = Rows()
    source = as_source(data, "cpu", max_bytes=max_bytes)
    full = collect(source, shuffle=True, seed=3, epoch=2)
    data.read.clear()
    tail = collect(source, shuffle=True, seed=3, epoch=2, start=start)
    assert_equal_batches(tail, full[start:])
    if source.mode == "streamed":  # only the rows of batches start.. were read
        assert sorted(data.read) == sorted(torch.cat([b["x"][:, 0] for b in full[start:]]).long().tolist()) \
            if start < 5 else data.read == []


def test_workers_give_the_same_batches():
    source = as_source(Rows(), "cpu", num_workers=2, max_bytes=0)
    assert_equal_batches(collect(source, shuffle=True, seed=1, epoch=1),
                         collect(as_source(Rows(), "cpu"), shuffle=True, seed=1, epoch=1))


def test_sizes_dims_and_description():
    streamed = as_source(Rows(), "cpu", max_bytes=0)
    on_device = as_source(Rows(), "cpu", max_bytes=10 ** 6)
    for source in (streamed, on_device):
        assert source.num_rows == 23 and source.num_batches(5) == 5 and source.num_batches(23) == 1
        assert source.dims() == {"x_dim": 3, "num_classes": 3}
        assert torch.equal(source.first_batch(4)["x"], tensors()["x"][:4])
    # 23 rows x (3 float32 + 1 int64) = 23 * 20 bytes
    assert "23 rows, about 460 B" in streamed.describe() and "streamed" in streamed.describe()
    assert "on-device" in on_device.describe() and "1.0 MB" in on_device.describe()
    assert as_source(Rows(), "cpu", max_bytes=460).mode == "on-device"
    assert as_source(Rows(), "cpu", max_bytes=459).mode == "streamed"
    assert 0 < default_max_bytes("cpu")
    assert as_source(tensors(), "cpu").dims() == {"x_dim": 3, "num_classes": 3}
    assert as_source(torch.ones(4, 2), "cpu").dims() == {"x_dim": 2}


def test_items_that_are_not_tensors():
    with pytest.raises(DataError, match=r"^item 0 of the data is a tuple \(Tensor, int\); each item must be a "
                                        r"tensor or a dict of tensors"):
        as_source(Rows(bad=0), "cpu")
    source = as_source(Rows(bad=17), "cpu", max_bytes=0)  # found when its batch is read
    with pytest.raises(DataError, match=r"^item 17 of the data is a tuple"):
        collect(source, shuffle=False)
    with pytest.raises(DataError, match="item 17"):  # and when the whole set is read at once
        as_source(Rows(bad=17), "cpu")
    with pytest.raises(DataError, match=r"^item 0 of the data is a dict whose 'y' is a int"):
        as_source([{"x": torch.zeros(2), "y": 1}], "cpu")
    with pytest.raises(DataError, match="is empty"):
        as_source(Rows(n=0), "cpu")
    with pytest.raises(TypeError, match="got int"):
        as_source(3, "cpu")
    with pytest.raises(ValueError, match="NaN"):
        as_source([torch.tensor([float("nan")])], "cpu")


class Stream(IterableDataset):
    def __iter__(self):
        return (torch.full((2,), float(i)) for i in range(7))


def test_iterable_dataset_in_its_own_order():
    source = as_source(Stream(), "cpu")
    assert source.mode == "streamed" and source.num_rows is None and source.num_batches(3) is None
    got = [b["x"][:, 0].tolist() for b in source.epoch_batches(3, seed=0, epoch=0)]
    assert got == [[0, 1, 2], [3, 4, 5], [6]]
    assert [b["x"][:, 0].tolist() for b in source.epoch_batches(3, start=2)] == [[6]]
    assert source.dims() == {"x_dim": 2}


class EpochSampler(torch.utils.data.Sampler):
    def __init__(self, n):
        self.n, self.epoch = n, 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        return self.n

    def __iter__(self):
        return iter(torch.randperm(self.n, generator=torch.Generator().manual_seed(self.epoch)).tolist())


def test_user_dataloader_with_set_epoch_resumes_exactly():
    loader = DataLoader(Rows(), batch_size=4, sampler=EpochSampler(23))
    source = as_source(loader, "cpu")
    assert source.num_rows == 23 and source.num_batches(999) == 6  # the loader's own batch size
    full = collect(source, epoch=5)
    assert_equal_batches(collect(source, epoch=5, start=2), full[2:])
    assert not torch.equal(collect(source, epoch=6)[0]["x"], full[0]["x"])
    assert source.dims() == {"x_dim": 3, "num_classes": 3}
    bad = as_source(DataLoader(torch.utils.data.TensorDataset(torch.zeros(4, 2), torch.zeros(4)), batch_size=2), "cpu")
    with pytest.raises(DataError, match=r"^batch 0 of the DataLoader is a list \(Tensor, Tensor\)"):
        bad.first_batch(2)
