"""``pyrovae bench --model M`` as a smoke test (tiny sizes, no timing asserted): every part of
the step's split and the evaluation's cost come back finite for models of each kind (images,
a recurrence, text, sets, an enumerated label), and the command prints its table or refuses
an unknown model in one line."""

import math
import subprocess
import sys

import pytest
import torch

from pyrovae.bench.models import bench_model, format_table, model_case

TINY = {"z_dim": 2, "hidden_dims": (8,), "rnn_dim": 8, "hidden_dim": 8, "embed_dim": 4, "c_dim": 2,
        "feature_dim": 8, "num_steps": 2}
PARTS = ["step ms", "networks forward ms", "densities ms", "draws ms", "pyro machinery ms", "backward ms",
         "optimizer ms", "bookkeeping ms", "eval ms/datapoint"]


@pytest.mark.parametrize("name", ["vae", "draw", "sentence-vae", "statistician", "m2", "robust", "dmm"])
def test_bench_model_reports_every_part(name, tmp_path):
    row = bench_model(name, batch_size=4, data_dir=tmp_path, profile=True, eval_samples=3, seconds=0.001,
                      blocks=1, options=TINY)
    for key in PARTS:
        assert math.isfinite(row[key]) and row[key] >= 0, (key, row[key])
    assert row["step ms"] > 0 and row["networks forward ms"] > 0 and row["eval K"] == 3
    assert 0 <= row["machinery share"] and math.isfinite(row["log-likelihood (untrained)"])
    assert f"| {name} |" in format_table([row])


def test_model_case_without_data_files_uses_the_models_example_batch(tmp_path):
    case = model_case("sentence-vae", batch_size=5, data_dir=tmp_path, options=TINY)
    assert case.data == "sentence-vae's example_batch(5)" and case.batch["x"].shape[0] == 5
    assert case.guide_name == "sentence" and case.model.options.hidden_dim == 8


def test_cli_bench_model_prints_the_table_and_refuses_an_unknown_model(tmp_path):
    cmd = [sys.executable, "-m", "pyrovae.cli", "bench", "--threads", "1", "--data-dir", str(tmp_path)]
    out = subprocess.run(cmd + ["--model", "linear", "--model-batch-size", "4", "--model-eval-samples", "2",
                                "--blocks", "1", "--block-seconds", "0.001", "--profile"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "| model | data | batch | replayed | step ms | networks forward ms" in out.stdout and "| linear |" in out.stdout
    bad = subprocess.run(cmd + ["--model", "nosuch"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "unknown model(s) nosuch for --model" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1


def test_model_case_cuts_padded_sequences_to_the_batchs_longest_row(tmp_path):
    # digit-sequences are generated, padded to the split's longest row (37 frames); fit's loop
    # cuts each batch to its own longest row, and so does the bench's fixed batch
    from pyrovae.data.datasets import load_dataset

    split = load_dataset("digit-sequences", data_dir=tmp_path).train
    case = model_case("hmm-vae", batch_size=6, data_dir=tmp_path, options=TINY)
    mask, width = case.batch["mask"], case.batch["mask"].shape[1]
    assert width == int(split["lengths"][:6].max()) < split["mask"].shape[1]
    assert mask[:, -1].any() and case.batch["x"].shape[1] == case.batch["units"].shape[1] == width
    assert (case.batch["x"] == split["x"][:6, :width]).all()


def test_interleaved_blocks_time_every_function_in_each_round():
    from pyrovae.bench.models import _interleaved_ms

    calls = {"a": 0, "b": 0}

    def count(name):
        def fn():
            calls[name] += 1
        return fn

    ms = _interleaved_ms({"a": count("a"), "b": count("b")}, torch.device("cpu"), seconds=0.0, blocks=3)
    assert set(ms) == {"a", "b"} and all(math.isfinite(v) and v >= 0 for v in ms.values())
    assert calls == {"a": 4, "b": 4}  # one sizing call each, then one call per block (seconds=0)


def test_bench_model_compile_is_refused_in_one_line_without_a_compiler(tmp_path, monkeypatch):
    import torch._inductor.config  # noqa: F401 - read CXX now: the fit's recording imports it, and it keeps
    # the value it read then, which would leave the fake compiler to a later test's torch.compile
    monkeypatch.setenv("CXX", "no-such-compiler-here")
    row = bench_model("vae", batch_size=4, data_dir=tmp_path, eval_samples=0, seconds=0.001, blocks=1,
                      options=TINY, compile=True)
    assert "needs a C++ compiler (no-such-compiler-here)" in row["compile refused"]
    assert "compiled ms" not in row and row["step ms"] > 0
    assert "| compile refused |" in format_table([row]).splitlines()[0].replace(" | eval", " |")


@pytest.mark.slow  # torch.compile takes seconds per network and shape
def test_bench_model_times_the_compiled_step_beside_the_default_one(tmp_path):
    row = bench_model("vae", batch_size=4, data_dir=tmp_path, eval_samples=0, seconds=0.001, blocks=2,
                      options=TINY, compile=True)
    assert "compile refused" not in row, row.get("compile refused")
    assert row["compiled ms"] > 0 and row["compile s"] > 0
    assert math.isclose(row["compiled / step"], row["compiled ms"] / row["step ms"])
    header = format_table([row]).splitlines()[0]
    assert "| compiled ms | compiled / step | compile s |" in header


def test_the_timed_steps_come_after_fits_recording(tmp_path):
    """The replay records fit's step on its 4th call (after 3 eager ones); the bench warmed up
    with 2, so a slow model's one-call blocks timed the recording (the VRNN: 3.6 s a step against
    0.55 s replayed). Warmed up, the step has its recording and every timed call replays."""
    import pyro

    from pyrovae.bench.models import _Step, _warm_up

    with pyro.validation_enabled(False):  # as the bench runs it
        step = _Step(model_case("vae", batch_size=8, data_dir=tmp_path))
        _warm_up(step)
        stepper = step.setup.step
        assert stepper.graph is not None and stepper.replays == 0 and stepper.eager_steps == 3
        step()
        assert stepper.replays == 1
        off = _Step(model_case("vae", batch_size=8, data_dir=tmp_path))
        off.setup.step.enabled = False  # no replay (e.g. --no-replay): the 2 calls of before
        _warm_up(off)
        assert off.i == 2
