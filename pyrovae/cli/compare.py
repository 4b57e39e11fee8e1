"""``pyrovae compare A B``: two runs' log-likelihoods, paired datapoint by datapoint.

``A`` and ``B`` are ``pyrovae evaluate`` results (``evaluation-*.json``) or run folders (the
folder's result for ``--split``/``--num-samples``/``--limit``, or its only one). The two must
have scored the same datapoints (the same data, split and limit: their fingerprints are
compared); the number of importance samples may differ (it is printed).

    pyrovae compare runs/one-layer runs/two-layers
    pyrovae compare runs/a/evaluation-test-K5000.json runs/b/evaluation-test-K5000.json --json
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import List

from pyrovae.cli import common
from pyrovae.errors import UsageError

HELP = "two runs' test log-likelihoods, paired datapoint by datapoint (B - A)"


NAME = re.compile(r"evaluation-(?P<split>[a-z]+)-K(?P<k>\d+)(?:-limit(?P<limit>\d+))?(?:-ais[^.]*)?\.json")


def find_result(path: str, args) -> Path:
    """The evaluation file ``path`` names: the file itself, or the run folder's result for
    ``args.split`` / ``args.limit`` (and ``args.num_samples`` where given)."""
    p = Path(path)
    if p.is_file():
        return p
    if not p.is_dir():
        raise UsageError(f"{path}: no such file or run folder; pass a run folder or its evaluation-*.json")
    found = []
    for f in sorted(p.glob("evaluation-*.json")):
        m = NAME.fullmatch(f.name)
        if (m and m["split"] == args.split and (int(m["limit"]) if m["limit"] else None) == args.limit
                and args.num_samples in (None, int(m["k"]))):
            found.append(f)
    if len(found) == 1:
        return found[0]
    settings = f"--split {args.split}" + (f" --num-samples {args.num_samples}" if args.num_samples else "") + \
        (f" --limit {args.limit}" if args.limit else "")
    if not found:
        raise UsageError(f"{p} has no evaluation for {settings}; run `pyrovae evaluate {p} {settings}` first")
    raise UsageError(f"{p} has {len(found)} evaluations for {settings} ({', '.join(f.name for f in found)}); "
                     "choose one with --num-samples, or pass the file")


def read_result(path: Path) -> dict:
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
    p.add_argument("--json", action="store_true", help="print one JSON object")
    common.add_common_flags(p)
    args = p.parse_args(argv)
    pa, pb = find_result(args.a, args), find_result(args.b, args)
    a, b = read_result(pa), read_result(pb)
    check_same_datapoints(a, b, pa, pb)
    d = paired_difference(b["per_datapoint"], a["per_datapoint"])
    if args.json:
        print(json.dumps({"a": str(pa), "b": str(pb), "a_log_likelihood": a["log_likelihood"],
                          "b_log_likelihood": b["log_likelihood"], "paired": d.as_dict()}))
        return 0
    for name, path, r in (("A", pa, a), ("B", pb, b)):
        print(f"{name}: {r['log_likelihood']:.3f} ± {r['stderr']:.3f} nats (K={r['num_samples']}, "
              f"{r['num_datapoints']} {r['split']} datapoints)  {path}")
    print(f"B - A, paired: {d}")
    return 0
