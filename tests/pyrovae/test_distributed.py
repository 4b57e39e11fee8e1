"""Data-parallel fit with two CPU processes (gloo): identical parameters on every rank after
every step, the same steps as one process with the whole batch, and an exact resume."""

import os
import socket

import pyro
import pyro.distributions as dist
import pytest
import torch
import torch.distributed as torch_dist
import torch.multiprocessing as mp
from pyro.nn import PyroModule

from pyrovae import fit
from pyrovae.training.distributed import ProcessGroup, launched
from pyrovae.guides import DiagNormalGuide
from pyrovae.models import VAE
from pyrovae.infer.objectives import ELBO

X_DIM, Z_DIM, ROWS, BATCH = 10, 2, 67, 20  # 4 batches per epoch: 20, 20, 20 and 7 (shards of 4 and 3)


class PointGuide(PyroModule):
    """z = encoder(x) exactly (a Delta): the ELBO has no noise, so runs can be compared."""

    def __init__(self):
        super().__init__()
        self.encoder = torch.nn.Linear(X_DIM, Z_DIM)

    def forward(self, x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Delta(self.encoder(x)).to_event(1))


class Snapshots(ELBO):
    """The ELBO, keeping the parameters seen at every call (those after the previous step)."""

    def __init__(self, modules):
        super().__init__()
        self.modules, self.seen = modules, []

    def __call__(self, model, guide, batch, step=None):
        self.seen.append(torch.cat([p.detach().flatten() for m in self.modules for p in m.parameters()]).clone())
        return super().__call__(model, guide, batch, step)


def deterministic_run(distributed):
    torch.manual_seed(0)
    model, guide = VAE(X_DIM, Z_DIM, (8,)), PointGuide()
    x = torch.bernoulli(torch.rand(ROWS, X_DIM, generator=torch.Generator().manual_seed(1)))
    objective = Snapshots([model, guide])
    fit(model, guide, x, objective=objective, epochs=2, batch_size=BATCH, lr=1e-2, seed=5,
        progress=False, distributed=distributed, valid_data=x[:10])
    final = torch.cat([p.detach().flatten() for m in (model, guide) for p in m.parameters()])
    # seen: the parameters at the first-step check, then before each of the 8 steps
    return torch.stack(objective.seen[2:] + [final])  # after each step


def noisy_fit(out_dir, epochs, resume=False):
    torch.manual_seed(0)
    model, guide = VAE(X_DIM, Z_DIM, (8,)), DiagNormalGuide(X_DIM, Z_DIM, (8,))
    x = torch.rand(ROWS, X_DIM, generator=torch.Generator().manual_seed(2))
    result = fit(model, guide, {"x": torch.bernoulli(x, generator=torch.Generator().manual_seed(3))},
                 epochs=epochs, batch_size=BATCH, lr=1e-2, seed=5, progress=False, distributed=True,
                 out_dir=out_dir, resume=resume)
    return torch.cat([p.detach().flatten() for m in (model, guide) for p in m.parameters()]), result.metrics


def _worker(rank, world_size, ports, tmp):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(ports[0]), RANK=str(rank),
                      LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size))
    torch.set_num_threads(1)
    pyro.clear_param_store()
    steps = deterministic_run(distributed=True)  # fit creates and tears down the process group
    # several fits in one launch: a process group of our own, which fit uses and leaves alone
    torch_dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{ports[1]}", rank=rank, world_size=world_size)
    straight, metrics = noisy_fit(os.path.join(tmp, "straight"), epochs=2)
    noisy_fit(os.path.join(tmp, "resumed"), epochs=1)
    resumed, resumed_metrics = noisy_fit(os.path.join(tmp, "resumed"), epochs=2, resume=True)
    assert torch_dist.is_initialized()
    torch_dist.barrier()
    torch_dist.destroy_process_group()
    torch.save({"steps": steps, "straight": straight, "resumed": resumed, "metrics": metrics,
                "resumed_metrics": resumed_metrics}, os.path.join(tmp, f"rank{rank}.pt"))


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    tmp = str(tmp_path_factory.mktemp("ddp"))
    mp.spawn(_worker, args=(2, _free_ports(2), tmp), nprocs=2, join=True)
    return [torch.load(os.path.join(tmp, f"rank{r}.pt"), weights_only=True) for r in range(2)]


def test_parameters_are_identical_on_every_rank_after_every_step(two_ranks):
    a, b = two_ranks
    assert a["steps"].shape[0] == 8
    assert torch.equal(a["steps"], b["steps"])
    assert not torch.equal(a["steps"][0], a["steps"][-1])  # it trained


def test_two_processes_make_the_steps_of_one_with_the_whole_batch(two_ranks):
    with pyro.validation_enabled(False):
        one = deterministic_run(distributed=False)
    assert torch.allclose(two_ranks[0]["steps"], one, rtol=1e-4, atol=1e-5), \
        (two_ranks[0]["steps"] - one).abs().max()


def test_data_parallel_resume_is_exact(two_ranks):
    for rank in two_ranks:
        assert torch.equal(rank["straight"], rank["resumed"])
        assert [m["train_loss"] for m in rank["metrics"]] == [m["train_loss"] for m in rank["resumed_metrics"]]
    assert torch.equal(two_ranks[0]["straight"], two_ranks[1]["straight"])
    # both ranks report the same (all-reduced) training loss
    assert [m["train_loss"] for m in two_ranks[0]["metrics"]] == [m["train_loss"] for m in two_ranks[1]["metrics"]]


def test_shards_are_contiguous_views_weighted_by_their_share():
    batch = {"x": torch.arange(10.0).reshape(5, 2)}
    parts = [ProcessGroup(rank=r, world_size=2, device=torch.device("cpu")).shard(batch) for r in range(2)]
    (first, w0), (second, w1) = parts
    assert torch.equal(torch.cat([first["x"], second["x"]]), batch["x"])
    assert first["x"].data_ptr() == batch["x"].data_ptr()  # a view
    assert (w0, w1) == (3 * 2 / 5, 2 * 2 / 5)  # rows * world / total: the mean over all rows
    assert not launched({"RANK": "0", "WORLD_SIZE": "1"}) and launched({"RANK": "1", "WORLD_SIZE": "2"})
