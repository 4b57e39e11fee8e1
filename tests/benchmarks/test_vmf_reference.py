"""benchmarks/vmf_vae_reference.py runs Xu & Durrett's NVLL code in a scratch folder: here its
data files (from a tiny PTB), its one adaptation of the reference's batches (on a stand-in
``NVLL`` package whose loader builds batches as the reference's does) and the paired
differences are checked."""

import gzip
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "vmf_vae_reference.py"

PTB = Path(os.environ.get("PYROVAE_DATA", Path(__file__).resolve().parents[2].parent / "shared" / "data")) / "ptb"


def run(*args, cwd=None):
    env = {**os.environ, "PYROVAE_DATA": str(PTB.parent)}  # the data this test found, not the caller's setting
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True,
                          timeout=120, cwd=cwd, env=env)


def test_without_a_command_it_prints_its_setup_with_the_commit():
    p = run()
    assert p.returncode != 0
    assert "6459c62c3e6003187d88e5907a2b6e20cf915892" in p.stderr and "nvll.py" in p.stderr


def test_data_writes_the_training_subset_and_the_scored_sentences(tmp_path):
    if not (PTB / "ptb.test.txt.gz").exists():
        pytest.skip(f"no PTB under {PTB}; set PYROVAE_DATA")
    p = run("data", "--train-size", 3, "--valid-size", 2, "--eval-sentences", 4, "--out", tmp_path)
    assert p.returncode == 0, p.stderr
    raw = {split: [line.split() for line in gzip.open(PTB / f"ptb.{split}.txt.gz", "rt")]
           for split in ("train", "valid", "test")}
    read = lambda name: [line.split() for line in (tmp_path / name).read_text().splitlines()]
    train = read("train.txt")
    assert len(train) == 3 and all(t in raw["train"] for t in train)
    assert read("valid.txt") == raw["valid"][:2]
    assert read("test.txt") == raw["test"]  # every word as in PTB, <unk> kept, no <eos> (the reference adds it)
    index = json.loads((tmp_path / "index.json").read_text())["eval_index"]
    assert index == torch.randperm(len(raw["test"]), generator=torch.Generator().manual_seed(0))[:4].sort().values.tolist()
    assert read("eval.txt") == [raw["test"][i] for i in index]


def test_train_runs_the_reference_with_contiguous_batches(tmp_path):
    """The stand-in builds batches as the reference's DataLM (``transpose(...).long()``): its
    ``view(-1)`` fails in current PyTorch without the shim's one adaptation."""
    package = tmp_path / "NVLL"
    (package / "data").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "data" / "__init__.py").write_text("")
    (package / "data" / "lm.py").write_text(textwrap.dedent("""
        import torch
        class DataLM:
            def __init__(self):
                self.train = self.set_batch([torch.arange(6.0)], 2)
            def set_batch(self, bag, batch_sz, batch_first=False):
                return [torch.transpose(torch.arange(12.0).view(2, 6), 1, 0).long()]
    """))
    (package / "nvll.py").write_text(textwrap.dedent("""
        import sys
        import torch
        from NVLL.data.lm import DataLM
        batch = DataLM().train[0]
        batch.view(-1)
        open(sys.argv[-1], "w").write(str(batch.is_contiguous()) + " " + str(torch.get_num_threads()))
    """))
    assert "view size is not compatible" in subprocess.run(
        [sys.executable, "nvll.py", "x"], cwd=package, capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": str(tmp_path)}).stderr
    p = run("train", "--", tmp_path / "marker", cwd=package)
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "marker").read_text() == "True 1"


def test_pair_gives_ours_minus_the_reference_per_sentence(tmp_path):
    ref = {"per_sentence": {"elbo": [-10.0, -20.0, -30.0], "is_ll": [-8.0, -18.0]}}
    ours = {"rows": [{"name": "mine", "per_sentence": {"elbo": [-9.0, -18.0, -27.0], "is_ll": [-8.0, -17.0, -5.0]}}]}
    (tmp_path / "ref.json").write_text(json.dumps(ref))
    (tmp_path / "ours.json").write_text(json.dumps(ours))
    p = run("pair", tmp_path / "ref.json", tmp_path / "ours.json")
    assert p.returncode == 0, p.stderr
    # -ELBO differences -1, -2, -3: mean -2, standard error 1 / sqrt(3); IS on the reference's 2: 0, -1
    assert "-ELBO - reference's -2.00 ± 0.58 (3 sentences)" in p.stdout
    assert "IS NLL - reference's -0.50 ± 0.50 (2 sentences)" in p.stdout
