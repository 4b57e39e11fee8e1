"""``pyrovae compare`` from the real command in fresh processes: two runs evaluated on the same
datapoints give the paired difference of the values their files keep; different datapoints,
an ambiguous folder and an older file without per-datapoint values are refused in one line."""

import json

import numpy as np
import pytest

from tests.cli.helpers import QUICK, one_line_error, pyrovae, pyrovae_here


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("compare")
    for name, z in (("a", "2"), ("b", "3")):
        flags = [f for f in QUICK if f not in ("--z-dim", "2")] + ["--z-dim", z]
        assert pyrovae("fit", *flags, "--out", name, cwd=folder).returncode == 0
        for limit in ("40", "30"):
            command = pyrovae if (name, limit) == ("a", "40") else pyrovae_here  # one fresh process is enough
            result = command("evaluate", name, "--num-samples", "20", "--limit", limit, cwd=folder)
            assert result.returncode == 0, result.stderr
    return folder


def test_the_paired_difference_of_the_kept_values(runs):
    result = pyrovae("compare", "a", "b", "--limit", "40", "--json", cwd=runs)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    a = json.loads((runs / "a" / "evaluation-test-K20-limit40.json").read_text())
    b = json.loads((runs / "b" / "evaluation-test-K20-limit40.json").read_text())
    assert len(a["per_datapoint"]) == 40 and a["data_sha1"] == b["data_sha1"]
    assert np.mean(a["per_datapoint"]) == pytest.approx(a["log_likelihood"])
    d = np.array(b["per_datapoint"]) - np.array(a["per_datapoint"])
    assert out["paired"]["mean"] == pytest.approx(d.mean())
    assert out["paired"]["stderr"] == pytest.approx(d.std(ddof=1) / np.sqrt(40))
    text = pyrovae_here("compare", "a/evaluation-test-K20-limit40.json", "b", "--limit", "40", cwd=runs).stdout
    assert f"B - A, paired: {d.mean():+.2f} ± {d.std(ddof=1) / np.sqrt(40):.2f} nats" in text


def test_different_datapoints_and_ambiguous_folders_are_refused(runs):
    result = pyrovae_here("compare", "a/evaluation-test-K20-limit40.json", "b/evaluation-test-K20-limit30.json",
                          cwd=runs)
    one_line_error(result, 2, "scored different numbers of datapoints (40 and 30)", "--limit")
    one_line_error(pyrovae_here("compare", "a", "b", cwd=runs), 2, "both have evaluations for --split test --limit 30 and "
                   "for --split test --limit 40", "choose one with --limit")
    old = runs / "old.json"
    kept = json.loads((runs / "a" / "evaluation-test-K20-limit40.json").read_text())
    old.write_text(json.dumps({k: v for k, v in kept.items() if k != "per_datapoint"}))
    one_line_error(pyrovae_here("compare", "old.json", "b", "--limit", "40", cwd=runs), 2,
                   "keeps no per-datapoint estimates", "--force")
