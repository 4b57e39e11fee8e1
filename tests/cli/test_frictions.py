"""A new user's small frictions, from the real command in fresh processes: a mistyped name
gets the closest one, a missing path is named as such, ``--resume`` of a folder that is not a
run touches nothing, ``evaluate --json`` prints a stored result, an unfinished run is scored
with a note and its epoch recorded, ``compare`` finds the evaluations both runs share,
``diagnose --site`` chooses the monitored latent, and a run fit from Python with a user's
registered pair names the ``--import`` it needs."""

import json
import subprocess
import sys
import textwrap

import pytest

from tests.cli.helpers import QUICK, environ, one_line_error, pyrovae, pyrovae_here


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("frictions")
    result = pyrovae("fit", *QUICK, "--out", "run", cwd=folder)
    assert result.returncode == 0, result.stderr
    return folder


def test_a_typo_gets_the_closest_name(tmp_path):
    one_line_error(pyrovae("fit", "--model", "vea", cwd=tmp_path), 2, "unknown model 'vea'", "did you mean 'vae'?",
                   "--import MODULE")
    one_line_error(pyrovae_here("fit", "--guide", "iaff", cwd=tmp_path), 2, "did you mean 'iaf'?")
    one_line_error(pyrovae_here("fit", "--data", "mnsit", cwd=tmp_path), 2, "unknown data set 'mnsit'",
                   "did you mean 'mnist'?")


@pytest.mark.parametrize("path", ["./photos", "photos/", "faces.npy"])
def test_a_missing_path_is_named_as_such(tmp_path, path):
    line = one_line_error(pyrovae("fit", "--data", path, cwd=tmp_path), 2, f"{path}: no such file or folder")
    assert "unknown data set" not in line and len(line) < 200, line


def test_resume_of_a_folder_that_is_not_a_run_touches_nothing(tmp_path):
    one_line_error(pyrovae("fit", *QUICK, "--out", "nothing", "--resume", cwd=tmp_path), 2,
                   "cannot resume nothing", "not a run folder", "--resume")
    assert not (tmp_path / "nothing").exists()
    (tmp_path / "empty").mkdir()
    one_line_error(pyrovae("fit", *QUICK, "--out", "empty", "--resume", cwd=tmp_path), 2, "not a run folder")
    assert list((tmp_path / "empty").iterdir()) == []


def test_evaluate_json_prints_the_stored_result(run):
    first = pyrovae("evaluate", "run", "--num-samples", "5", "--limit", "20", "--json", cwd=run)
    assert first.returncode == 0, first.stderr
    again = pyrovae_here("evaluate", "run", "--num-samples", "5", "--limit", "20", "--json", cwd=run)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout) == json.loads(first.stdout)
    stored = json.loads((run / "run" / "evaluation-test-K5-limit20.json").read_text())
    assert stored["epoch"] == 1 and stored["epochs"] == 1 and len(stored["per_datapoint"]) == 20
    # the plain form still refuses to replace it silently
    one_line_error(pyrovae_here("evaluate", "run", "--num-samples", "5", "--limit", "20", cwd=run), 2, "exists",
                   "--force")


def test_an_unfinished_run_is_scored_with_a_note(run):
    config_path = run / "run" / "run.json"
    config = json.loads(config_path.read_text())
    config["fit"]["epochs"] = 500  # as if killed after epoch 1 of 500
    config_path.write_text(json.dumps(config))
    try:
        result = pyrovae("evaluate", "run", "--num-samples", "5", "--limit", "10", cwd=run)
    finally:
        config["fit"]["epochs"] = 1
        config_path.write_text(json.dumps(config))
    assert result.returncode == 0, result.stderr
    assert "unfinished (epoch 1 of 500)" in result.stderr and "--resume" in result.stderr
    stored = json.loads((run / "run" / "evaluation-test-K5-limit10.json").read_text())
    assert (stored["epoch"], stored["epochs"]) == (1, 500)


def test_resume_of_a_plain_function_run_points_to_python(tmp_path):
    code = textwrap.dedent('''
        import pyro, pyro.distributions as dist, torch
        from pyrovae import fit
        from pyrovae.guides import DiagNormalGuide
        layer = torch.nn.Linear(2, 64)
        def model(x):
            pyro.module("layer", layer)
            with pyro.plate("data", x.shape[0]):
                z = pyro.sample("z", dist.Normal(x.new_zeros(2), 1.0).to_event(1))
                pyro.sample("x", dist.Bernoulli(logits=layer(z)).to_event(1), obs=x)
        fit(model, DiagNormalGuide(64, 2, (8,)), "digits", epochs=1, out_dir="run", progress=False, figures=False)
    ''')
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=environ(), capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    one_line_error(pyrovae("fit", "--out", "run", "--resume", cwd=tmp_path), 2, "fit from Python with a model",
                   "resume=True")


def test_print_of_a_run_is_short(run):
    code = "from pyrovae import load_run; print(repr(load_run('run')))"
    out = subprocess.run([sys.executable, "-c", code], cwd=run, env=environ(), capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    line = out.stdout.strip()
    assert line.startswith("Run('run': vae + diag on digits, epoch 1 of 1, validation ELBO ") and line.endswith(
        " nats)"), line


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("compare-k")
    for name, z in (("a", "2"), ("b", "3")):
        flags = [f for f in QUICK if f not in ("--z-dim", "2")] + ["--z-dim", z]
        assert pyrovae("fit", *flags, "--out", name, cwd=folder).returncode == 0
    return folder


def test_compare_uses_the_evaluations_both_runs_share(two_runs):
    for name, k, limit in (("a", "10", "30"), ("b", "20", "30"), ("b", "20", "25")):
        assert pyrovae_here("evaluate", name, "--num-samples", k, "--limit", limit, cwd=two_runs).returncode == 0
    result = pyrovae("compare", "a", "b", "--json", cwd=two_runs)  # only --limit 30 is common; K differs
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["a"].endswith("evaluation-test-K10-limit30.json")
    assert out["b"].endswith("evaluation-test-K20-limit30.json") and out["paired"]["n"] == 30
    line = one_line_error(pyrovae_here("compare", "a", "b", "--limit", "25", cwd=two_runs), 2,
                          "a has no evaluation for --split test --limit 25")
    assert "a has evaluation-test-K10-limit30.json" in line and "evaluation-test-K20-limit25.json" in line


def test_diagnose_site_chooses_the_monitored_latent(tmp_path):
    assert pyrovae("fit", "--model", "hvae", *QUICK, "--out", "run", cwd=tmp_path).returncode == 0
    small = ["--num-samples", "5", "--num-datapoints", "20", "--idata-draws", "4", "--gap-datapoints", "0"]
    result = pyrovae("diagnose", "run", *small, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "skipped monitors" in result.stdout and "--site NAME" in result.stdout and "site=" not in \
        result.stdout.split("--site NAME")[0]
    result = pyrovae_here("diagnose", "run", *small, "--site", "z1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "skipped monitors" not in result.stdout
    assert "active_units" in json.loads((tmp_path / "run" / "diagnostics.json").read_text())["monitors"]
    one_line_error(pyrovae_here("diagnose", "run", *small, "--site", "zz", cwd=tmp_path), 2, "--site zz", "z1")


USER_PAIR = textwrap.dedent('''
    """A user's registered guide."""
    from pyrovae.guides.diag import DiagNormalGuide
    from pyrovae.registry import register_guide


    @register_guide("my-diag")
    class MyDiag(DiagNormalGuide):
        """The diagonal guide under the user's name."""
''')


def test_a_python_run_of_a_user_pair_names_its_module(tmp_path):
    (tmp_path / "userpair.py").write_text(USER_PAIR)
    code = textwrap.dedent('''
        from pyrovae import fit
        from pyrovae.models import VAE
        from userpair import MyDiag
        fit(VAE(64, 2, (16,)), MyDiag(64, 2, (16,)), "digits", epochs=1, out_dir="run", progress=False)
    ''')
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=environ(), capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert json.loads((tmp_path / "run" / "run.json").read_text())["guide"]["module"] == "userpair"
    one_line_error(pyrovae("evaluate", "run", "--num-samples", "5", cwd=tmp_path), 1,
                   "guide 'my-diag' is not registered", "--import userpair")
    one_line_error(pyrovae("fit", "--out", "run", "--resume", "--epochs", "2", cwd=tmp_path), 2,
                   "guide 'my-diag', which is not registered here", "--import userpair")
    result = pyrovae("evaluate", "run", "--num-samples", "5", "--import", "userpair", cwd=tmp_path)
    assert result.returncode == 0, result.stderr


def test_resume_of_a_finished_run_says_so_and_touches_nothing(tmp_path):
    """`pyrovae fit --out runs/x --resume` of a run that had finished its epochs printed its closing
    lines again as if it had trained, re-scored it over its end-of-fit file and added an empty
    segment; `--resume --epochs 100` of a 250-epoch run recorded 100 as the run's epochs."""
    assert pyrovae("fit", *QUICK, "--out", "run", cwd=tmp_path).returncode == 0
    before = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir() if p.name != ".lock"}
    one_line_error(pyrovae("fit", "--out", "run", "--resume", cwd=tmp_path), 2,
                   "run has finished its 1 epochs: nothing to train", "--epochs N (more than 1)", "pyrovae evaluate run")
    one_line_error(pyrovae("fit", "--out", "run", "--resume", "--epochs", "1", cwd=tmp_path), 2, "nothing to train")
    after = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir() if p.name != ".lock"}
    assert after == before
    result = pyrovae("fit", "--out", "run", "--resume", "--epochs", "2", "--eval-samples", "0", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    one_line_error(pyrovae("fit", "--out", "run", "--resume", "--epochs", "1", cwd=tmp_path), 2,
                   "cannot resume run with --epochs 1: it has finished 2 epochs already")


def test_fit_from_python_refuses_to_resume_to_fewer_epochs_than_done(tmp_path):
    import torch

    from pyrovae import fit
    from pyrovae.errors import UsageError
    from pyrovae.guides import DiagNormalGuide
    from pyrovae.models import VAE

    x = torch.bernoulli(torch.full((40, 6), 0.3), generator=torch.Generator().manual_seed(0))
    fit(VAE(6, 2, (8,)), DiagNormalGuide(6, 2, (8,)), x, epochs=2, batch_size=20, out_dir=tmp_path / "r",
        progress=False, figures=False)
    saved = (tmp_path / "r" / "run.json").read_text()
    with pytest.raises(UsageError, match="cannot resume .* to epochs=1: it has finished 2 epochs"):
        fit(VAE(6, 2, (8,)), DiagNormalGuide(6, 2, (8,)), x, epochs=1, batch_size=20, out_dir=tmp_path / "r",
            progress=False, figures=False, resume=True)
    assert (tmp_path / "r" / "run.json").read_text() == saved


@pytest.mark.parametrize("flags, message", [
    (["--batch-size", "0"], "--batch-size must be a positive integer, got 0"),  # was a ZeroDivisionError traceback
    (["--epochs", "-1"], "--epochs must be a positive integer, got -1"),
    (["--lr", "0"], "--lr must be a positive number, got 0"),
    (["--eval-samples", "-1"], "--eval-samples must be >= 0"),
])
def test_a_count_or_rate_out_of_range_names_the_flag(tmp_path, flags, message):
    one_line_error(pyrovae("fit", *flags, cwd=tmp_path), 2, message)
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("model", ["vrnn", "m2"])
def test_a_guide_that_does_not_pair_with_the_model_names_the_models_own(tmp_path, model):
    """`pyrovae fit --model vrnn --guide diag` said only "Model and guide event_dims disagree at site
    'z': 2 vs 1"; now the error also names the model's own guide and the flag to drop."""
    one_line_error(pyrovae("fit", "--model", model, "--guide", "diag", *QUICK, cwd=tmp_path), 2,
                   "the guide does not match the model", f"model '{model}' pairs with guide '{model}': drop --guide diag")
    assert not (tmp_path / "runs").exists()


def test_fit_help_says_which_objectives_options_it_lists(tmp_path):
    """`--objective`'s help said "default: the guide's, else elbo" while vae + diag trains with
    meanfield (the model's default_objective)."""
    result = pyrovae("fit", "--help", cwd=tmp_path)
    text = " ".join(result.stdout.split())
    assert "default: the guide's, else the model's, else elbo; the options listed below are meanfield's" in text
    assert "options of objective 'meanfield'" in text


def test_ctrl_c_during_the_end_of_fit_score_says_the_run_is_complete(tmp_path):
    """A Ctrl-C during the score that follows the fit (4 minutes for draw on MNIST) said only
    "pyrovae fit: interrupted", as if the run were lost."""
    import signal

    from tests.cli.helpers import environ

    command = [sys.executable, "-m", "pyrovae.cli", "fit", "--epochs", "1", "--z-dim", "2", "--hidden-dims", "16",
               "--no-progress", "--eval-samples", "100000", "--eval-budget", "0", "--out", "run"]
    # SIGINT at its default in the child: a run in the background (nohup, `&`) ignores it, and Python then
    # installs no KeyboardInterrupt handler
    process = subprocess.Popen(command, cwd=tmp_path, env=environ({"PYTHONUNBUFFERED": "1"}), text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    for line in process.stdout:
        if line.startswith("epochs: "):  # the fit has ended; the score (300 images at K = 100,000) begins
            process.send_signal(signal.SIGINT)
            break
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert "interrupted after the fit ended: run holds the finished run (1 epoch)" in err, err
    assert "pyrovae evaluate run --num-samples 100000" in err and "Traceback" not in err
    assert (tmp_path / "run" / "checkpoint.pt").is_file()


def test_ctrl_c_that_passes_through_an_exec_of_a_string_still_exits_130(tmp_path):
    """The Ctrl-C test above failed about one run in eight: the child printed its message and
    died by SIGINT (-2), not 130. A Ctrl-C right after the "epochs:" line lands in the score's lazy
    imports, inside a dataclass that ``exec`` makes from a string; a KeyboardInterrupt passing
    through such an ``exec`` leaves CPython's "unhandled KeyboardInterrupt" flag set, and ``python
    -m`` then ends by SIGINT whatever main returned. Made certain here: a plugin that raises it
    from an ``exec`` of a string."""
    from tests.cli.helpers import environ

    (tmp_path / "interrupting.py").write_text('exec("raise KeyboardInterrupt")\n')
    result = subprocess.run([sys.executable, "-m", "pyrovae.cli", "fit", "--import", "interrupting", "--epochs", "1"],
                            cwd=tmp_path, env=environ(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 130, result.stderr
    assert result.stderr.strip() == "pyrovae fit: interrupted"


def test_a_warning_is_one_line(tmp_path):
    """The replay's fallback warning (acn and ssvae-text printed it at every fit before they declared
    replays_step = False) came as Python
    prints warnings: the path of pyrovae/training/replay.py with a line number, then the source
    line that warned; docs/cli.md calls it a one-line warning. --debug keeps Python's form."""
    (tmp_path / "hostvae.py").write_text(textwrap.dedent('''
        from pyrovae.models.vae import VAE
        from pyrovae.registry import register_model


        @register_model("host-vae")
        class HostVAE(VAE):
            """A VAE whose step reads a tensor on the host: it cannot be replayed."""

            def forward(self, x=None, num_samples=None):
                if x is not None:
                    x.sum().item()
                return super().forward(x, num_samples)
    '''))
    result = pyrovae("fit", "--import", "hostvae", "--model", "host-vae", "--guide", "diag", *QUICK, "--out", "run",
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == ["pyrovae fit: warning: the training step reads tensor values on the host (.item(), .tolist(), "
                     ".numpy()); it cannot be replayed and runs eagerly"], result.stderr
    debug = pyrovae("fit", "--import", "hostvae", "--model", "host-vae", "--guide", "diag", *QUICK, "--out", "run2",
                    "--debug", cwd=tmp_path)
    assert debug.returncode == 0 and "replay.py:" in debug.stderr and "RuntimeWarning" in debug.stderr, debug.stderr


def test_a_run_stopped_before_its_first_epoch_ended_says_so(tmp_path):
    """A fit stopped during its first epoch leaves run.json and no checkpoint (m2 on
    mnist-100labels: 549 steps); evaluate, sample and diagnose said "no checkpoint at
    runs/m2/checkpoint.pt; was the run started with this out_dir?"."""
    assert pyrovae("fit", *QUICK, "--out", "run", cwd=tmp_path).returncode == 0
    for name in ("checkpoint.pt", "checkpoint.prev.pt"):  # as a fit stopped during its first epoch leaves it
        (tmp_path / "run" / name).unlink(missing_ok=True)
    for command in ("evaluate", "sample", "diagnose"):
        one_line_error(pyrovae(command, "run", cwd=tmp_path), 2, "run has no checkpoint: its fit stopped before its "
                       "first checkpoint", "pyrovae fit ... --out run")


def test_default_epochs_stop_early_and_the_best_weights_are_the_runs_result(tmp_path):
    # no --epochs: 3000 steps (250 epochs of the digits) with --patience a tenth of them; the
    # kept weights are named, and evaluate reads them unless --weights last
    out = tmp_path / "r"
    fitted = pyrovae("fit", "--data", "digits", "--z-dim", "2", "--hidden-dims", "16", "--eval-samples", "0",
                     "--no-progress", "--threads", "1", "--out", out, cwd=tmp_path, timeout=300)
    assert fitted.returncode == 0, fitted.stderr
    saved = json.loads((out / "run.json").read_text())
    assert saved["fit"]["epochs"] == 250 and saved["fit"]["patience"] == 25 and saved["fit"]["keep_best"] is True
    best = saved["best"]["epoch"]
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert best == max(metrics, key=lambda r: r["valid_elbo"])["epoch"]
    if best != metrics[-1]["epoch"]:
        assert f"kept the weights of epoch {best}" in fitted.stdout
    # an early stop is explained once (fit's line as it happens), and summed up in the epochs line
    said = fitted.stdout + fitted.stderr
    if metrics[-1]["epoch"] < 250:
        assert said.count("no better validation ELBO") == 1, said
        assert f"epochs: {metrics[-1]['epoch']} of 250 asked, stopped early (--patience 25)" in fitted.stdout
    else:
        assert "stopped early" not in said
    flags = ["--num-samples", "10", "--limit", "20", "--json"]
    kept = json.loads(pyrovae_here("evaluate", out, *flags, cwd=tmp_path).stdout)
    last = json.loads(pyrovae_here("evaluate", out, *flags, "--weights", "last", cwd=tmp_path).stdout)
    assert (kept["weights_epoch"], last["weights_epoch"]) == (best, metrics[-1]["epoch"])
    assert (out / "evaluation-test-K10-limit20.json").is_file() and (out / "evaluation-test-K10-last-limit20.json").is_file()
