"""The run folder: rotated checkpoints, fallback, corrupt files, the lock, file modes, Ctrl-C."""

import fcntl
import json
import os
import signal
import stat

import pytest
import torch
from torch.distributions import constraints

from pyrovae import fit
from pyrovae.errors import CheckpointError, RunLockedError
from pyrovae.guides import DiagNormalGuide
from pyrovae.models import VAE
from pyrovae.training.checkpoint import Checkpoints, load_checkpoint
from pyrovae.training.files import interrupts_deferred
from pyrovae.training.parameters import constraint_from_name, constraint_name

X = torch.bernoulli(torch.full((60, 6), 0.3), generator=torch.Generator().manual_seed(0))


def pair():
    return VAE(6, 2, (8,)), DiagNormalGuide(6, 2, (8,))


def quick(out, epochs=2, **kwargs):
    return fit(*pair(), X, epochs=epochs, batch_size=20, out_dir=out, progress=False, figures=False, **kwargs)


def test_checkpoints_rotate_and_files_are_0644(tmp_path):
    quick(tmp_path / "r")
    assert load_checkpoint(tmp_path / "r" / "checkpoint.pt")["epoch"] == 2
    assert load_checkpoint(tmp_path / "r" / "checkpoint.prev.pt")["epoch"] == 1
    umask = os.umask(0)
    os.umask(umask)
    for name in ("checkpoint.pt", "checkpoint.prev.pt", "run.json", "metrics.jsonl"):
        assert stat.S_IMODE((tmp_path / "r" / name).stat().st_mode) == 0o666 & ~umask, name
    assert not [p.name for p in (tmp_path / "r").iterdir() if p.name.startswith(".checkpoint")]


def test_short_epochs_are_saved_by_time_and_resume_exactly_from_any_saved_epoch(tmp_path):
    # epochs of 3 steps: saved after the first and the last only (checkpoint_seconds), every one with 0
    a = quick(tmp_path / "a", epochs=5, checkpoint_seconds=1e9)
    assert load_checkpoint(tmp_path / "a" / "checkpoint.pt")["epoch"] == 5
    assert load_checkpoint(tmp_path / "a" / "checkpoint.prev.pt")["epoch"] == 1
    assert [m["epoch"] for m in a.metrics] == [1, 2, 3, 4, 5]
    quick(tmp_path / "b", epochs=5, checkpoint_seconds=0)
    assert load_checkpoint(tmp_path / "b" / "checkpoint.prev.pt")["epoch"] == 4
    # a run killed after epoch 4 whose last save was epoch 1 continues from there to the same weights
    (tmp_path / "a" / "checkpoint.pt").unlink()
    resumed = quick(tmp_path / "a", epochs=5, checkpoint_seconds=1e9, resume=True)
    assert [m["epoch"] for m in resumed.metrics] == [1, 2, 3, 4, 5]
    for p, q in zip(a.model.parameters(), resumed.model.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


def test_resume_is_exact_where_the_segments_validate_other_epochs_than_the_whole_run(tmp_path):
    # a segment's last epoch always validates; with valid_every=2 the run never interrupted does not
    # validate after epoch 1, so the validation must leave the training stream untouched. 65 rows at
    # batch 10: a partial last batch; the same objects reused for the resume, as from one process
    x = torch.bernoulli(torch.full((75, 6), 0.3), generator=torch.Generator().manual_seed(1))
    # (keep_best=False: the segmented run validates epoch 1 too, so its best may be another epoch)
    kwargs = dict(batch_size=10, progress=False, figures=False, valid_data=x[65:], valid_every=2, keep_best=False)
    whole = fit(*pair(), x[:65], epochs=2, out_dir=tmp_path / "whole", **kwargs)
    model, guide = pair()
    first = fit(model, guide, x[:65], epochs=1, out_dir=tmp_path / "cut", **kwargs)
    assert "valid_elbo" in first.metrics[0] and "valid_elbo" not in whole.metrics[0]
    resumed = fit(model, guide, x[:65], epochs=2, out_dir=tmp_path / "cut", resume=True, **kwargs)
    unvalidated = fit(*pair(), x[:65], epochs=2, batch_size=10, progress=False)
    for ours in (resumed, unvalidated):  # validation or none: the same training draws
        for p, q in zip(whole.model.parameters(), ours.model.parameters()):
            torch.testing.assert_close(p, q, rtol=0, atol=0)
    assert resumed.metrics[-1]["valid_elbo"] == whole.metrics[-1]["valid_elbo"]


def test_truncated_latest_checkpoint_resumes_from_the_previous_one(tmp_path, capsys):
    quick(tmp_path / "r")
    path = tmp_path / "r" / "checkpoint.pt"
    path.write_bytes(path.read_bytes()[:300])
    result = quick(tmp_path / "r", epochs=3, resume=True)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "truncated or corrupt" in err[0] and "checkpoint.prev.pt (epoch 1)" in err[0]
    assert [m["epoch"] for m in result.metrics] == [1, 2, 3]


def test_corrupt_and_code_carrying_checkpoints_are_one_line_errors(tmp_path):
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match=r"checkpoint.pt is truncated or corrupt .*start a new run") as info:
        load_checkpoint(path)
    assert "\n" not in str(info.value)

    marker = tmp_path / "executed"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save({"epoch": 1, "payload": Payload()}, path)
    with pytest.raises(CheckpointError, match="carries code .* never executed") as info:
        load_checkpoint(path)
    assert "\n" not in str(info.value) and not marker.exists()


def test_interrupt_while_saving_leaves_the_last_complete_checkpoint(tmp_path, monkeypatch):
    quick(tmp_path / "r", epochs=1)
    real_save = torch.save

    def interrupted(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        quick(tmp_path / "r", epochs=2, resume=True)
    monkeypatch.setattr(torch, "save", real_save)
    assert load_checkpoint(tmp_path / "r" / "checkpoint.pt")["epoch"] == 1
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == [".lock", "checkpoint.pt", "metrics.jsonl",
                                                                  "run.json"]


@pytest.fixture
def python_sigint():
    """Python's KeyboardInterrupt handler for the test, even where pytest was started with SIGINT
    ignored (a background job of a non-interactive shell)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_ctrl_c_during_a_save_waits_for_it_then_interrupts(tmp_path, monkeypatch, python_sigint):
    """A real SIGINT in the middle of torch.save (where torch's zip writer would turn the
    KeyboardInterrupt into a RuntimeError) is held until the epoch's files are written: fit
    stops with KeyboardInterrupt and the checkpoint it just wrote is complete."""
    quick(tmp_path / "r", epochs=1)
    real_save = torch.save

    def signalled(obj, f, *args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)  # delivered at once without the deferral
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", signalled)
    with pytest.raises(KeyboardInterrupt):
        quick(tmp_path / "r", epochs=3, resume=True)
    monkeypatch.setattr(torch, "save", real_save)
    assert load_checkpoint(tmp_path / "r" / "checkpoint.pt")["epoch"] == 2  # epoch 2's save finished
    assert json.loads((tmp_path / "r" / "run.json").read_text())["segments"][-1]["completed_epoch"] == 2
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored


def test_interrupts_deferred_nests_and_honours_an_ignoring_handler(python_sigint):
    with pytest.raises(KeyboardInterrupt):
        with interrupts_deferred():
            with interrupts_deferred():
                os.kill(os.getpid(), signal.SIGINT)
            done = True  # the inner block's end hands the signal to the outer, which holds it
    assert done
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with interrupts_deferred():
            os.kill(os.getpid(), signal.SIGINT)
    finally:
        signal.signal(signal.SIGINT, previous)


def test_a_second_writer_is_refused_and_a_stale_lock_file_is_not(tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    (run / ".lock").write_text("999999\n")  # left by a dead process: nobody holds it
    quick(run, epochs=1)
    with open(run / ".lock") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(RunLockedError, match=f"{run} is being written by another process"):
            quick(run, epochs=2, resume=True)
    quick(run, epochs=2, resume=True)  # released: fine again


@pytest.mark.parametrize("constraint", [
    constraints.real, constraints.positive, constraints.unit_interval, constraints.simplex,
    constraints.lower_cholesky, constraints.interval(-1.0, 2.5), constraints.greater_than(0.001),
    constraints.less_than(3.0), constraints.independent(constraints.positive, 1),
])
def test_constraints_are_saved_by_name_and_restored(constraint):
    name = constraint_name(constraint)
    back = constraint_from_name(name)
    assert constraint_name(back) == name
    value = torch.randn(3, 3)
    transform = torch.distributions.transform_to
    assert torch.allclose(transform(back)(value), transform(constraint)(value))


def test_checkpoints_object_falls_back_when_the_latest_is_missing(tmp_path):
    quick(tmp_path / "r")
    (tmp_path / "r" / "checkpoint.pt").unlink()  # as between the two renames without hard links
    assert Checkpoints(tmp_path / "r").load()["epoch"] == 1
