"""``pyrovae compare A B``: two runs' log-likelihoods, paired datapoint by datapoint.

``A`` and ``B`` are ``pyrovae evaluate`` results (``evaluation-*.json``) or run folders (the
folder's result for ``--split``/``--num-samples``/``--limit``, or its only one). The two must
have scored the same datapoints (the same data, split and limit: their fingerprints are
compared); the number of importance samples may differ (it is printed). ``--ais`` pairs the
AIS estimates of ``pyrovae evaluate --ais`` results instead of the importance-sampled ones.

    pyrovae compare runs/one-layer runs/two-layers
    pyrovae compare runs/one-layer runs/two-layers --ais
    pyrovae compare runs/a/evaluation-test-K5000.json runs/b/evaluation-test-K5000.json --json
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import List, Tuple

from pyrovae.cli import common
from pyrovae.errors import UsageError

HELP = "two runs' test log-likelihoods, paired datapoint by datapoint (B - A)"


NAME = re.compile(r"evaluation-(?P<split>[a-z]+)-K(?P<k>\d+)(?:-limit(?P<limit>\d+))?(?:-random(?P<random>\d+))?"
                  r"(?P<ais>-ais[^.]*)?\.json")


def evaluations(folder: Path, args) -> List[Tuple[tuple, int, Path]]:
    """``(key, K, path)`` of each importance-sampled evaluation in ``folder`` that the flags
    allow; the key ``(split, limit, random)`` says which datapoints were scored (``random``: the
    size of the end-of-fit score's random subset)."""
    found = []
    for f in sorted(folder.glob("evaluation-*.json")):
        m = NAME.fullmatch(f.name)
        if not m or bool(m["ais"]) != bool(getattr(args, "ais", False)):
            continue
        key = _key(m)
        if (key[0] == args.split and (args.limit is None or key[1] == args.limit)
                and args.num_samples in (None, int(m["k"]))):
            found.append((key, int(m["k"]), f))
    return found


def _key(m: re.Match) -> tuple:
    return m["split"], int(m["limit"]) if m["limit"] else None, int(m["random"]) if m["random"] else None


def describe(key: tuple) -> str:
    split, limit, random = key
    return f"--split {split}" + (f" --limit {limit}" if limit else "") + (f" (a random {random}, end of fit)"
                                                                          if random else "")


def find_results(a: str, b: str, args) -> Tuple[Path, Path]:
    """The two evaluation files to compare: files given as such, else each run folder's result
    for the datapoints both have scored (the same split and limit; the largest K both share,
    else each one's largest), chosen by ``--split`` / ``--limit`` / ``--num-samples``."""
    paths = [Path(a), Path(b)]
    for p in paths:
        if not p.exists():
            raise UsageError(f"{p}: no such file or run folder; pass a run folder or its evaluation-*.json")
    if all(p.is_file() for p in paths):
        return paths[0], paths[1]
    found = [[] if p.is_file() else evaluations(p, args) for p in paths]
    for i, p in enumerate(paths):  # a file given: the folder's result for the same datapoints
        if p.is_file():
            m = NAME.fullmatch(p.name)
            if m:
                found[i] = [(_key(m), int(m["k"]), p)]
            else:
                found[i] = [(key, k, p) for key, k, _ in found[1 - i]]  # unnamed: whatever the folder has
    keys = [{key for key, _, _ in f} for f in found]
    common = keys[0] & keys[1]
    if len(common) > 1:  # the full split wins over subsets; else the choice is the user's
        full = {key for key in common if key[1] is None and key[2] is None}
        common = full or common
    if len(common) != 1:
        settings = describe((args.split, args.limit, None)) + (f" --num-samples {args.num_samples}"
                                                                if args.num_samples else "")
        if common:
            raise UsageError(f"{a} and {b} both have evaluations for {' and for '.join(sorted(map(describe, common)))}; "
                             "choose one with --limit (or --num-samples), or pass the files")
        have = "; ".join(f"{p} has " + (", ".join(f.name for f in sorted(p.glob("evaluation-*.json"))) or "none")
                         for p in paths if p.is_dir())
        missing = paths[0] if not found[0] else paths[1]
        if not found[0] or not found[1]:
            raise UsageError(f"{missing} has no evaluation for {settings} ({have}); run `pyrovae evaluate {missing} "
                             f"{settings}` first")
        raise UsageError(f"{a} and {b} have no evaluation of the same datapoints ({have}); evaluate both with "
                         "the same --split and --limit")
    key = common.pop()
    ks = [{k: f for key_, k, f in found[i] if key_ == key} for i in range(2)]
    shared = set(ks[0]) & set(ks[1])
    if shared:  # the same K on both sides where there is one
        return ks[0][max(shared)], ks[1][max(shared)]
    return ks[0][max(ks[0])], ks[1][max(ks[1])]


def read_result(path: Path, ais: bool = False) -> dict:
    try:
        result = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise UsageError(f"{path} is not a readable evaluation result ({error})") from None
    if not isinstance(result, dict) or "log_likelihood" not in result:
        raise UsageError(f"{path} is not a pyrovae evaluate result (no log_likelihood)")
    if "per_datapoint" not in result:
        raise UsageError(f"{path} keeps no per-datapoint estimates (written by an older pyrovae); run "
                         f"`pyrovae evaluate {path.parent} --num-samples {result.get('num_samples', 5000)}"
                         + (f" --limit {result['limit']}" if result.get("limit") else "") + " --force` to rewrite it")
    if ais and "ais_per_datapoint" not in result:
        flags = (f" --limit {result['limit']}" if result.get("limit") else "")
        raise UsageError(f"{path} keeps no per-datapoint AIS estimates (" + (
            "no AIS run" if "ais" not in result else "written by an older pyrovae") + f"); run `pyrovae evaluate "
            f"{path.parent}{flags} --ais --force` to score it with AIS, or compare without --ais")
    return result


def check_same_datapoints(a: dict, b: dict, pa: Path, pb: Path) -> None:
    """:class:`UsageError` unless the two results scored the same datapoints."""
    for key in ("split", "num_datapoints", "data_sha1"):
        if a.get(key) != b.get(key):
            what = {"split": "splits", "num_datapoints": "numbers of datapoints",
                    "data_sha1": "data (their fingerprints differ)"}[key]
            detail = "" if key == "data_sha1" else f" ({a.get(key)} and {b.get(key)})"
            raise UsageError(f"{pa} and {pb} scored different {what}{detail}; a paired comparison needs the "
                             "same datapoints: evaluate both runs on the same data, split and --limit")


def main(argv: List[str]) -> int:
    from pyrovae.evaluation.compare import paired_difference

    p = common.Parser(prog="pyrovae compare", description="Two runs' log-likelihoods, paired (B - A).")
    p.add_argument("a", help="run folder or evaluation-*.json (the reference)")
    p.add_argument("b", help="run folder or evaluation-*.json")
    p.add_argument("--split", default="test", choices=["train", "valid", "test"],
                   help="which evaluation of a run folder (default test)")
    p.add_argument("--num-samples", type=int, default=None, help="which evaluation of a run folder: its K")
    p.add_argument("--limit", type=int, default=None, help="which evaluation of a run folder: its --limit")
    p.add_argument("--ais", action="store_true",
                   help="pair the AIS estimates of `pyrovae evaluate --ais` results (default: the importance-sampled)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    common.add_common_flags(p)
    args = p.parse_args(argv)
    pa, pb = find_results(args.a, args.b, args)
    a, b = read_result(pa, args.ais), read_result(pb, args.ais)
    check_same_datapoints(a, b, pa, pb)
    values = "ais_per_datapoint" if args.ais else "per_datapoint"
    d = paired_difference(b[values], a[values])
    summary = [r["ais"] if args.ais else r for r in (a, b)]
    if args.json:
        print(json.dumps({"a": str(pa), "b": str(pb), "a_log_likelihood": summary[0]["log_likelihood"],
                          "b_log_likelihood": summary[1]["log_likelihood"], "estimator": "ais" if args.ais else
                          "importance", "paired": d.as_dict()}))
        return 0
    for name, path, r, s in (("A", pa, a, summary[0]), ("B", pb, b, summary[1])):
        how = f"AIS, T={s['num_steps']}, {s['num_chains']} chains" if args.ais else f"K={r['num_samples']}"
        print(f"{name}: {s['log_likelihood']:.3f} ± {s['stderr']:.3f} nats ({how}, "
              f"{r['num_datapoints']} {r['split']} datapoints)  {path}")
    print(f"B - A, paired: {d}")
    return 0
