"""The end-of-fit score within a time budget (pyrovae/evaluation/bounded.py) and the lines a
slow fit prints without a progress bar (pyrovae/training/heartbeat.py).

The score is checked on a pair whose guide is the exact posterior: z ~ N(0, 1), x | z ~
N(z, 1), q(z | x) = N(x / 2, 1 / 2), so every importance weight is p(x) and each datapoint's
estimate is log N(x; 0, 2) exactly, whatever K and whichever rows are drawn."""

import math
import time

import pyro
import pyro.distributions as dist
import pytest
import torch

from pyrovae import fit
from pyrovae.evaluation.bounded import CHUNK_PAIRS, MIN_DATAPOINTS, MIN_KEPT, bounded_log_likelihood, plan
from pyrovae.training import heartbeat


def model(x):
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(x.new_zeros(()), 1.0))
        pyro.sample("x", dist.Normal(z.unsqueeze(-1), 1.0).to_event(1), obs=x)


def guide(x):
    with pyro.plate("data", x.shape[0]):
        pyro.sample("z", dist.Normal(x[:, 0] / 2, math.sqrt(0.5)))


X = {"x": torch.randn(400, 1, generator=torch.Generator().manual_seed(0)) * math.sqrt(2)}


def exact(rows):
    return dist.Normal(0.0, math.sqrt(2)).log_prob(X["x"][rows, 0]).double()


def test_an_ample_budget_scores_every_row_in_order():
    score = bounded_log_likelihood(model, guide, X, 100, budget=float("inf"))
    assert score.complete and torch.equal(score.rows, torch.arange(400))
    assert torch.allclose(score.estimate.per_datapoint, exact(score.rows), atol=1e-4)
    assert score.estimate.num_samples == 100 and score.describe() == "all 400 test images"


def test_no_budget_keeps_the_first_chunk_at_the_asked_k():
    """Out of time after the first chunk (K = 100: 50 rows): those rows at K = 100, a random
    subset, not 100 rows again at a lower K (a looser bound, and no faster where K's particles
    run as one batch; found on the VRNN: K lowered to 1 after 50 sequences at 100)."""
    score = bounded_log_likelihood(model, guide, X, 100, budget=0.0)
    rows = score.rows
    assert len(rows) == CHUNK_PAIRS // 100 >= MIN_KEPT and torch.equal(rows, rows.sort().values)
    assert len(set(rows.tolist())) == len(rows) and rows.max() > 300  # a random subset, not the first rows
    assert score.estimate.num_samples == 100
    assert torch.allclose(score.estimate.per_datapoint, exact(rows), atol=1e-4)
    assert score.describe() == "50 of 400 test images (a random subset)"
    again = bounded_log_likelihood(model, guide, X, 100, budget=0.0)
    assert torch.equal(again.rows, rows)  # the subset is fixed by the seed: runs can be compared


def test_no_budget_with_a_small_first_chunk_scores_a_random_hundred_rows_at_a_lower_k():
    """K = 1000: the first chunk is 5 rows, too few to keep: 100 rows at the K that fits."""
    score = bounded_log_likelihood(model, guide, X, 1000, budget=0.0)
    rows = score.rows
    assert CHUNK_PAIRS // 1000 < MIN_KEPT
    assert len(rows) == MIN_DATAPOINTS and torch.equal(rows, rows.sort().values) and len(set(rows.tolist())) == 100
    assert rows.max() > 300
    assert score.estimate.num_samples == 1
    assert torch.allclose(score.estimate.per_datapoint, exact(rows), atol=1e-4)
    assert score.estimate.log_likelihood == pytest.approx(float(exact(rows).mean()), abs=1e-4)
    assert score.describe() == "100 of 400 test images (a random subset), K lowered from 1000 to fit the time"


def test_the_rows_of_a_dataset_are_read_by_index():
    class Rows(torch.utils.data.Dataset):
        def __len__(self):
            return 400

        def __getitem__(self, i):
            return X["x"][i]

    data = Rows()
    score = bounded_log_likelihood(model, guide, data, 10, budget=float("inf"))
    assert score.complete and torch.allclose(score.estimate.per_datapoint, exact(torch.arange(400)), atol=1e-4)


@pytest.mark.parametrize("cost, total, k, budget", [
    (1e-5, 10000, 100, 30.0), (7e-4, 10000, 100, 30.0), (1e-2, 10000, 100, 30.0), (1e-3, 50, 100, 1.0),
    (1e-6, 10, 5000, 0.0),
])
def test_the_plan_fits_the_budget_or_keeps_the_fewest_rows(cost, total, k, budget):
    n, kk = plan(cost, total, k, budget)
    assert 1 <= n <= total and 1 <= kk <= k
    if (n, kk) == (total, k):
        assert total * k * cost <= budget
    elif kk == k:  # fewer rows at the asked K, as many as fit, never below the floor
        assert n * k * cost <= budget < (n + 1) * k * cost and n >= min(MIN_DATAPOINTS, total)
    else:  # the floor of rows, at the K that fits (at least 1)
        assert n == min(MIN_DATAPOINTS, total) and (kk == 1 or n * kk * cost <= budget)


def test_a_slow_fit_without_a_bar_prints_an_estimate_then_a_line_every_interval(monkeypatch, capsys):
    monkeypatch.setattr(heartbeat, "LONG", 0.0)
    monkeypatch.setattr(heartbeat, "EVERY", 0.05)
    layer = torch.nn.Linear(1, 1)

    def slow_model(x):
        pyro.module("layer", layer)
        time.sleep(0.02)
        model(layer(x))

    x = torch.randn(80, 1)
    # replay=False: a replayed step would not run the sleep (Python, not tensor operations)
    fit(slow_model, guide, x, epochs=1, batch_size=4, figures=False, replay=False)  # stderr is not a terminal
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("fit: ")]
    assert "ms per step (steps 5-7); an epoch of 20 steps takes" in lines[0]
    assert "the fit (1 epoch) " in lines[0]
    assert any(line.startswith("fit: epoch 1/1, step ") for line in lines[1:]), lines
    fit(slow_model, guide, x, epochs=1, batch_size=4, figures=False, progress=False)  # --no-progress: silent
    assert "fit: " not in capsys.readouterr().err


def test_the_estimate_leaves_out_the_first_slow_steps_and_says_milliseconds():
    """The first steps (eager, then the replay's recording) took several times the later ones,
    and the default job (`pyrovae fit`, 250 epochs of 12 steps on digits, about 20 s) was announced
    as "0.0 s per step (first 3 steps); an epoch of 12 steps takes about 0 s, the fit about 2 min"."""
    times = [0.0, 0.04, 0.08, 0.12]  # batch 0 and three slow steps (40 ms each), then 7 ms a step
    times += [0.12 + 0.007 * i for i in range(1, 40)]
    lines = []
    beat = heartbeat.Heartbeat(epochs=250, steps_per_epoch=12, enabled=True, write=lines.append,
                               clock=iter(times).__next__)
    for i in range(12):
        beat.step(0, i)
    assert lines == []  # 250 x 12 x 7 ms = 21 s: under a minute, no line
    lines, slow = [], [0.0, 4.0, 8.0, 12.0] + [12.0 + 0.5 * i for i in range(1, 40)]
    beat = heartbeat.Heartbeat(epochs=20, steps_per_epoch=12, enabled=True, write=lines.append,
                               clock=iter(slow).__next__)
    for i in range(12):
        beat.step(0, i)
    assert lines == ["fit: 500 ms per step (steps 5-7); an epoch of 12 steps takes about 6 s, the fit (20 epochs) "
                     "about 2 min"]


def test_the_score_names_what_a_test_row_is():
    """Sequences and sets are not "test images" (found on vrnn's and the statistician's fits)."""
    from pyrovae.data.datasets import load_dataset
    from pyrovae.evaluation.bounded import datapoint_noun

    assert datapoint_noun(load_dataset("digits")) == "images"
    assert datapoint_noun(load_dataset("digit-sequences")) == "sequences"
    assert datapoint_noun(load_dataset("digits-sets")) == "sets"
    score = bounded_log_likelihood(model, guide, X, 10, budget=float("inf"), noun="datapoints")
    assert score.describe() == "all 400 test datapoints"
