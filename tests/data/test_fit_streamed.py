"""fit and log_likelihood on torch Datasets, DataLoaders and IterableDatasets: the same
parameters as the same rows given as a tensor, in the same order, held on the device or
streamed; data that is not tensors refused in one line."""

import numpy as np
import pyro
import pytest
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, Sampler

from pyrovae import fit
from pyrovae.data import DataError, epoch_order
from pyrovae.evaluation.log_likelihood import elbo, log_likelihood
from pyrovae.guides import DiagNormalGuide
from pyrovae.models import VAE

SEED, BATCH, EPOCHS = 3, 16, 2
X = torch.bernoulli(torch.full((70, 6), 0.3), generator=torch.Generator().manual_seed(0))
V = torch.bernoulli(torch.full((25, 6), 0.3), generator=torch.Generator().manual_seed(1))


class Rows(Dataset):
    """A user's map-style Dataset: one row per item, as a tensor or as {"x": row}."""

    def __init__(self, x, as_dict=False):
        self.x, self.as_dict = x, as_dict

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i]} if self.as_dict else self.x[i]


class EpochOrder(Sampler):
    """fit's order for the tensor path, as a sampler with set_epoch (like DistributedSampler)."""

    def __init__(self, n):
        self.n, self.epoch = n, 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __iter__(self):
        return iter(epoch_order(self.n, True, SEED, self.epoch).tolist())

    def __len__(self):
        return self.n


class Stream(IterableDataset):
    """An IterableDataset that yields the rows in fit's order for each epoch."""

    def __init__(self, x):
        self.x, self.epoch = x, 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __iter__(self):
        return (self.x[i] for i in epoch_order(len(self.x), True, SEED, self.epoch).tolist())


def trained(data, **options):
    pyro.set_rng_seed(0)
    model, guide = VAE(6, 2, (8,)), DiagNormalGuide(6, 2, (8,))
    result = fit(model, guide, data, epochs=EPOCHS, batch_size=BATCH, seed=SEED, progress=False, figures=False,
                 **options)
    state = {f"model.{k}": v.clone() for k, v in model.state_dict().items()}
    state.update({f"guide.{k}": v.clone() for k, v in guide.state_dict().items()})
    return state, result


def assert_same(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.fixture(scope="module")
def reference():
    """The tensor path: X held on the device, V for validation."""
    return trained(X, valid_data=V)


@pytest.mark.parametrize("as_dict", [False, True])
def test_a_dataset_that_fits_is_held_on_the_device_and_trains_as_the_tensor(reference, as_dict):
    state, result = trained(Rows(X, as_dict), valid_data=Rows(V, as_dict))
    assert result.data_mode.startswith("data on-device: 70 rows")
    assert_same(reference[0], state)
    assert [m["valid_elbo"] for m in result.metrics] == [m["valid_elbo"] for m in reference[1].metrics]


def test_a_streamed_dataset_trains_as_the_on_device_one(reference):
    state, result = trained(Rows(X), valid_data=Rows(V), max_bytes=0)  # forced: read batch by batch
    assert result.data_mode.startswith("data streamed: 70 rows")
    assert_same(reference[0], state)
    # the validation ELBO read in batches draws what the held tensors draw
    assert [m["valid_elbo"] for m in result.metrics] == [m["valid_elbo"] for m in reference[1].metrics]


def test_a_streamed_dataset_with_two_workers_trains_as_the_on_device_one(reference):
    state, _ = trained(Rows(X), valid_data=V, max_bytes=0, num_workers=2)
    assert_same(reference[0], state)


def test_a_dataloader_in_the_same_order_trains_as_the_tensor(reference):
    # a DataLoader without a generator draws its workers' base seed from torch's global stream
    # on every epoch, which shifts the pair's draws: reproducible, but not the tensor run
    loader = DataLoader(Rows(X), batch_size=BATCH, sampler=EpochOrder(len(X)), generator=torch.Generator())
    state, result = trained(loader, valid_data=V)
    assert result.data_mode.startswith("data streamed: a DataLoader")
    assert_same(reference[0], state)


def test_an_iterable_dataset_in_the_same_order_trains_as_the_tensor(reference):
    state, result = trained(Stream(X), valid_data=V)
    assert result.data_mode.startswith("data streamed: an IterableDataset")
    assert_same(reference[0], state)


def test_a_shuffled_dataloader_without_a_generator_is_still_reproducible():
    def run():
        torch.manual_seed(0)
        return trained(DataLoader(Rows(X), batch_size=BATCH, shuffle=True))[0]

    assert_same(run(), run())


def test_resume_of_a_streamed_run_equals_the_uninterrupted_run(tmp_path):
    straight, _ = trained(Rows(X), max_bytes=0, out_dir=tmp_path / "straight")
    pyro.set_rng_seed(0)
    model, guide = VAE(6, 2, (8,)), DiagNormalGuide(6, 2, (8,))
    fit(model, guide, Rows(X), epochs=1, batch_size=BATCH, seed=SEED, progress=False, figures=False, max_bytes=0,
        out_dir=tmp_path / "r")
    resumed, _ = trained(Rows(X), max_bytes=0, out_dir=tmp_path / "r", resume=True)
    assert_same(straight, resumed)
    position = torch.load(tmp_path / "r" / "checkpoint.pt", weights_only=False)["position"]
    assert position == {"epoch": EPOCHS, "batch": 0}


def test_resume_is_an_option_and_fit_has_ten_parameters():
    import inspect

    from pyrovae.training.setup import FitOptions

    names = list(inspect.signature(fit).parameters)
    assert names == ["model", "guide", "data", "objective", "epochs", "batch_size", "lr", "seed", "out_dir",
                     "options", "more"]
    assert FitOptions(resume=True).resume


def test_fit_reads_an_array_file_by_its_path(tmp_path):
    np.save(tmp_path / "rows.npy", X.numpy())
    _, result = trained(str(tmp_path / "rows.npy"))
    assert result.dataset.kind == "array" and result.data_mode.startswith("data on-device")
    assert result.metrics[-1]["valid_elbo"] < 0  # the held-out valid split


def test_items_that_are_not_tensors_are_refused_in_one_line():
    class Pairs(Rows):
        def __getitem__(self, i):
            return self.x[i], 0

    with pytest.raises(DataError, match=r"^item 0 of the data is a tuple \(Tensor, int\); each item must be a "
                                        r"tensor or a dict of tensors") as error:
        trained(Pairs(X))
    assert "\n" not in str(error.value)


def test_log_likelihood_and_elbo_of_a_dataset_equal_those_of_the_tensor():
    model, guide = VAE(6, 2, (8,)), DiagNormalGuide(6, 2, (8,))
    results = []
    # a DataLoader with its own generator leaves torch's global stream alone (see above)
    loader = DataLoader(Rows(V), batch_size=10, generator=torch.Generator())
    for data in (V, Rows(V), loader):
        pyro.set_rng_seed(1)
        est = log_likelihood(model, guide, data, num_samples=20, batch_size=10)
        pyro.set_rng_seed(1)
        results.append((est.per_datapoint, elbo(model, guide, data, batch_size=10)))
    for per_datapoint, value in results[1:]:
        assert torch.equal(per_datapoint, results[0][0]) and value == results[0][1]


def test_diagnose_takes_the_test_data_as_a_dataset(tmp_path):
    from pyrovae.evaluation.report import diagnose
    from pyrovae.training.run_folder import load_run

    trained(Rows(X), out_dir=tmp_path / "run", max_bytes=0)
    results = diagnose(load_run(tmp_path / "run"), Rows(V), num_samples=10, num_datapoints=20, idata_draws=5,
                       gap_datapoints=0)
    assert results["importance"]["num_datapoints"] == 20 and (tmp_path / "run" / "report.md").is_file()
