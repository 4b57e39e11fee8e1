"""benchmarks/results.py: docs/results.md generated from the results files, up to date, every
row citing a page that has its anchor; --quick covers every script (and, marked slow, runs)."""

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "results.py"


def _module():
    spec = importlib.util.spec_from_file_location("bench_results", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _run(*args, cwd=ROOT):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=120)


def _row(**kw):
    base = dict(system="S", docs="docs/vae.md", paper="p", reference="none run yet", ours="o",
                budget="b", command="c", direction="holds", cause="", init="default")
    return {**base, **kw}


def test_the_checked_in_page_is_what_the_command_writes():
    p = _run("--check")
    assert p.returncode == 0, p.stderr


def test_the_page_is_generated_from_the_files_one_row_each_in_order(tmp_path):
    res = tmp_path / "results"
    res.mkdir()
    (res / "b.json").write_text(json.dumps(_row(system="Second", order=2, direction="does not hold",
                                                cause="the init | measured", init="torch",
                                                init_note="not re-run")))
    (res / "a.json").write_text(json.dumps(_row(system="First", order=1, ours="-1.5 ± 0.1")))
    out = tmp_path / "results.md"
    p = _run("--results", res, "--out", out, "--fresh", tmp_path / "none")
    assert p.returncode == 0, p.stderr
    text = out.read_text()
    rows = [line for line in text.splitlines() if line.startswith("| [")]
    assert [r.split("]")[0] for r in rows] == ["| [First", "| [Second"]
    assert "-1.5 ± 0.1" in rows[0] and "| holds |" in rows[0]
    assert "the init \\| measured" in rows[1]  # a | in a cell is escaped, the table keeps its columns
    assert "2 systems: holds 1, partly 0, does not hold 1" in text
    # the start of each row: a column, and the header's count (generated, never written by hand)
    assert "| -1.5 ± 0.1 | default | b |" in rows[0] and "| torch's layers: not re-run |" in rows[1]
    assert "1 of 2 rows from the defaults; 1 from torch's layers: Second." in text
    assert "partly:" not in text.split("| system |")[0]
    assert _run("--results", res, "--out", out, "--check").returncode == 0
    out.write_text(text + "edited by hand\n")
    stale = _run("--results", res, "--out", out, "--check")
    assert stale.returncode == 1 and "out of date" in stale.stderr


def test_a_fresh_benchmark_json_replaces_the_documented_figure(tmp_path):
    res, fresh = tmp_path / "results", tmp_path / "fresh"
    res.mkdir(), fresh.mkdir()
    spec = {"script": "m2_mnist.py", "args": ["--epochs", "10"], "ours": "{r[results][3000][error]:.2%}"}
    (res / "m2.json").write_text(json.dumps(_row(ours="figure-on-record", fresh=spec)))
    out = tmp_path / "results.md"
    assert _run("--results", res, "--out", out, "--fresh", fresh).returncode == 0
    assert "figure-on-record" in out.read_text()
    (fresh / "m2.json").write_text(json.dumps({"results": {"3000": {"error": 0.0931}}}))
    assert _run("--results", res, "--out", out, "--fresh", fresh).returncode == 0
    text = out.read_text()
    assert "9.31% (fresh: m2.json)" in text and "figure-on-record" not in text
    assert f"python benchmarks/m2_mnist.py --epochs 10 --json {fresh / 'm2.json'}" in text
    (fresh / "m2.json").write_text(json.dumps({"results": {}}))
    bad = _run("--results", res, "--out", out, "--fresh", fresh)
    assert bad.returncode == 2 and "rerun benchmarks/m2_mnist.py" in bad.stderr
    # a fresh run from another start than the row says is refused
    (fresh / "m2.json").write_text(json.dumps({"results": {"3000": {"error": 0.0931}}}))
    (res / "m2.json").write_text(json.dumps(_row(fresh={**spec, "args": ["--init", "torch"]})))
    bad = _run("--results", res, "--out", out, "--fresh", fresh)
    assert bad.returncode == 2 and "init 'default' but the fresh run's args set --init" in bad.stderr


def test_the_header_counts_the_rows_by_start():
    mod = _module()
    rows = [dict(_row(system=f"S{i}"), init=init, init_note="a comparator from torch's layers")
            for i, init in enumerate(["default", "torch", "default", "partly"])]
    assert mod.starts(rows) == "2 of 4 rows from the defaults; 1 from torch's layers: S1; 1 partly: S3."
    assert mod.starts(rows[:1]) == "1 of 1 rows from the defaults; 0 from torch's layers."


def test_every_row_says_its_start_and_a_torch_row_how_to_reproduce_it():
    """A row from torch's layers carries --init torch (or a script's --m2-init torch) in its
    command, or its note says the script starts there itself."""
    mod = _module()
    for row in mod.load_rows():
        assert row["init"] in mod.STARTS, row["name"]
        if row["init"] == "torch":
            assert "init torch" in row["command"] or "from torch's layers" in row.get("init_note", ""), row["name"]
        if row["init"] != "default":
            assert row.get("init_note"), row["name"]


@pytest.mark.parametrize("change, says", [
    ({"direction": "yes"}, "is not one of"), ({"paper": None}, "missing paper"),
    ({"init": None}, "missing init; add them (init: where ours' figure starts, one of default, torch, partly)"),
    ({"init": "burda"}, "init 'burda' is not one of default, torch, partly"),
    ({"init": "partly"}, "init 'partly' needs an init_note"),
])
def test_a_bad_results_file_is_named_and_nothing_is_written(tmp_path, change, says):
    res = tmp_path / "results"
    res.mkdir()
    row = {k: v for k, v in {**_row(), **change}.items() if v is not None}
    (res / "x.json").write_text(json.dumps(row))
    out = tmp_path / "results.md"
    p = _run("--results", res, "--out", out)
    assert p.returncode == 2 and "x.json" in p.stderr and says in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and not out.exists()


def _anchors(page: Path):
    slugs = set()
    for line in page.read_text().splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            slugs.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return slugs


def test_every_row_cites_a_docs_page_and_heading_that_exist():
    mod = _module()
    rows = mod.load_rows()
    assert len(rows) >= 23
    for row in rows:
        page, _, anchor = row["docs"].partition("#")
        assert (ROOT / page).is_file(), row["name"]
        assert not anchor or anchor in _anchors(ROOT / page), (row["name"], anchor)


def test_the_page_is_linked_from_the_index_and_the_readme():
    assert "(results.md)" in (ROOT / "docs" / "index.md").read_text()
    assert "(docs/results.md)" in (ROOT / "README.md").read_text()


def test_quick_names_every_benchmark_script():
    mod = _module()
    scripts = {p.name for p in (ROOT / "benchmarks").glob("*.py") if mod.is_script(p)}
    named = set(mod.QUICK) | set(mod.CANNOT)
    assert scripts == named, (sorted(scripts - named), sorted(named - scripts))
    assert not set(mod.QUICK) & set(mod.CANNOT)
    for name in mod.QUICK:  # every output goes to the scratch folder, never into the repository
        args = mod.quick_args(name, "/scratch")
        for flag in ("--json", "--figure", "--figures", "--out", "--text", "--features"):
            if flag in args:
                assert args[args.index(flag) + 1].startswith("/scratch"), (name, flag)


def test_quick_refuses_an_unknown_script():
    p = _run("--quick", "--scripts", "nope.py")
    assert p.returncode == 2 and "no benchmarks/nope.py" in p.stderr


@pytest.mark.slow
def test_quick_runs_every_benchmark_script(data_dir, tmp_path):
    """Minutes: each script with tiny settings (that it runs, not its figures)."""
    env = {**os.environ, "PYROVAE_DATA": str(data_dir)}
    keep = tmp_path / "quick"
    p = subprocess.run(["nice", "-n", "5", sys.executable, str(SCRIPT), "--quick", "--keep", keep], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=3600)
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-2000:]
    # a fresh run replaces a documented figure: each file's template reads its script's real JSON
    mod = _module()
    with_fresh = [r for r in mod.load_rows() if r.get("fresh")]
    assert with_fresh
    for row in with_fresh:
        args = mod.quick_args(row["fresh"]["script"], keep)
        run = Path(args[args.index("--json") + 1])
        assert row["fresh"]["ours"].format(r=mod._keyed(json.loads(run.read_text()))), row["name"]
