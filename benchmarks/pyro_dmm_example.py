"""Run Pyro's own deep Markov model example, ``examples/dmm.py``, unchanged, on the local Bach
chorales, and compare it with a ``pyrovae fit --model dmm`` run on the same test chorales: the
reference of docs/sequences.md ("against Pyro's example at equal budget").

Two parts, two Pythons.

``run`` (the reference's venv: the example asserts pyro 1.9.1). The example reads JSB chorales
through ``pyro.contrib.examples.polyphonic_data_loader``, which downloads a pickle of MIDI note
lists and caches it, processed, as ``jsb_chorales.pkl`` in ``get_data_directory(...)``. This script
writes that processed cache from ``$PYROVAE_DATA/bach_chorales/bach_chorales.npz`` (the suite's
``bach-chorales``: 213 / 69 / 68 chorales, one row per beat, 88 keys from MIDI 21, the example's own
``min_note=21, note_range=88`` layout) in the format the loader's ``process_data`` writes (per split
``sequence_lengths``, a long tensor, and ``sequences``, a list of float (T, 88) tensors), and points
``pyro.contrib.examples.util.get_data_directory`` at it (the module is replaced by a stub, as the
original imports torchvision). The loader itself, the networks, model, guide, ClippedAdam, KL
annealing, batching and loop are the example's own code. It sets one torch thread, seeds Pyro
(``--seed``; the example sets none), runs the example as ``__main__`` with the remaining arguments,
and then, because the example's ``main`` returns nothing and scores the test set only every 50
epochs, rebuilds its ``DMM`` from Pyro's param store (``pyro.module("dmm", ...)`` keeps every
trained parameter there) and scores each test chorale with the example's own ``model`` and
``guide``: K guide draws (the chorale repeated K times as one mini-batch, like the example's
``rep``), the log-weights log p(x, z) - log q(z | x) summed over the chorale's beats, giving its
importance-sampled log p(x) and its K-draw mean ELBO. They are saved (``--save``) with the process
CPU and wall time of the training.

``compare`` (this repository's venv): scores a ``pyrovae fit`` run folder on the same test
chorales with the same K (``pyrovae.evaluation.log_likelihood.iter_log_weights``) and prints both,
per beat (the sum over chorales divided by the beats, the example's normalisation), and paired
(difference per chorale, summed, per beat; the standard error over chorales, scaled to a beat).

Setup, in a scratch folder outside this repository:

    python -m venv .venv && . .venv/bin/activate && pip install torch pyro-ppl==1.9.1 numpy
    git --git-dir=PYRO/.git show COMMIT:examples/dmm.py > dmm.py
    cp PATH/TO/benchmarks/pyro_dmm_example.py run_ref.py
    nice python run_ref.py run --seed 0 --num-samples 100 --save ref_dmm.pt -- -n 20 -ae 4

(``-ae 4``: the example anneals the KL weight over its first 1000 of 5000 epochs; at 20 epochs the
same fifth. Its other flags keep their defaults: batch 20, lr 3e-4, z 100.) Ours and the comparison:

    pyrovae fit --model dmm --data bach-chorales --z-dim 100 --transition-dim 200 --emission-dim 100 \
        --rnn-dim 600 --batch-size 20 --lr 3e-4 --epochs 20 --seed 0 --threads 1 --out runs/dmm-pyro
    python benchmarks/pyro_dmm_example.py compare --reference ref_dmm.pt --ours runs/dmm-pyro --num-samples 100
"""
import argparse, json, math, os, pickle, runpy, sys, time, types

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.environ.get("PYROVAE_DATA", ".")


def chorales():
    """{split: (list of uint8 (T, 88) arrays, lengths)} from the suite's npz, in its order."""
    arrays = np.load(os.path.join(DATA, "bach_chorales", "bach_chorales.npz"))
    out = {}
    for split in ("train", "valid", "test"):
        lengths = arrays[split + "_lengths"].astype(np.int64)
        out[split] = (np.split(arrays[split], np.cumsum(lengths)[:-1]), lengths)
    return out


def write_cache(folder):
    """The processed cache the example's loader reads (``process_data``'s format)."""
    os.makedirs(folder, exist_ok=True)
    cache = {split: {"sequence_lengths": torch.as_tensor(lengths, dtype=torch.long),
                     "sequences": [torch.as_tensor(s, dtype=torch.float32) for s in seqs]}
             for split, (seqs, lengths) in chorales().items()}
    with open(os.path.join(folder, "jsb_chorales.pkl"), "wb") as f:
        pickle.dump(cache, f, pickle.HIGHEST_PROTOCOL)


def reference_scores(namespace, num_samples, seed):
    """Per test chorale, the importance-sampled log p(x) and the mean ELBO of the trained DMM, with
    the example's own model and guide, K = ``num_samples`` draws."""
    import pyro
    import pyro.poutine as poutine
    poly = namespace["poly"]

    store = pyro.get_param_store()
    state = {name.split("$$$", 1)[1]: store[name].detach().clone() for name in store.keys() if name.startswith("dmm$$$")}
    dmm = namespace["DMM"]()
    dmm.load_state_dict(state)
    pyro.clear_param_store()
    dmm.eval()
    pyro.set_rng_seed(seed)
    seqs, lengths = chorales()["test"]
    ll, elbo = [], []
    with torch.no_grad():
        for seq, length in zip(seqs, lengths):
            x = torch.as_tensor(seq, dtype=torch.float32).expand(num_samples, -1, -1).contiguous()
            batch = poly.get_mini_batch(torch.arange(num_samples), x, torch.full((num_samples,), int(length)))
            guide = poutine.trace(dmm.guide).get_trace(*batch)
            model = poutine.trace(poutine.replay(dmm.model, trace=guide)).get_trace(*batch)
            log_w = 0.0
            for trace, sign in ((model, 1.0), (guide, -1.0)):
                trace.compute_log_prob()
                for site in trace.nodes.values():
                    if site["type"] == "sample":
                        log_w = log_w + sign * site["log_prob"]
            ll.append(float(torch.logsumexp(log_w, 0) - math.log(num_samples)))
            elbo.append(float(log_w.mean()))
    return torch.tensor(ll, dtype=torch.float64), torch.tensor(elbo, dtype=torch.float64)


def run(argv):
    parser = argparse.ArgumentParser(prog="run_ref.py run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-samples", type=int, default=100, help="K for the test chorales' log p(x)")
    parser.add_argument("--save", default=None, help="save the per-chorale scores and the times here")
    parser.add_argument("example_args", nargs=argparse.REMAINDER, help="-- then the example's arguments")
    args = parser.parse_args(argv)
    example_args = [a for a in args.example_args if a != "--"]

    torch.set_num_threads(1)
    folder = os.path.join(HERE, ".data")
    write_cache(folder)
    import pyro
    import pyro.contrib.examples

    util = types.ModuleType("pyro.contrib.examples.util")
    util.get_data_directory = lambda filepath=None: folder
    sys.modules["pyro.contrib.examples.util"] = util
    pyro.contrib.examples.util = util

    pyro.set_rng_seed(args.seed)
    sys.argv = [os.path.join(HERE, "dmm.py")] + example_args
    cpu0, wall0 = time.process_time(), time.time()
    namespace = runpy.run_path(sys.argv[0], run_name="__main__")
    cpu, wall = time.process_time() - cpu0, time.time() - wall0
    epochs = namespace["args"].num_epochs
    print(f"reference: {epochs} epochs, {cpu:.1f} s CPU ({cpu / epochs:.2f} s/epoch), {wall:.1f} s wall", flush=True)
    ll, elbo = reference_scores(namespace, args.num_samples, args.seed)
    beats = float(sum(chorales()["test"][1]))
    print(f"reference test: log p(x) {float(ll.sum()) / beats:.4f}, ELBO {float(elbo.sum()) / beats:.4f} nats per beat "
          f"(K = {args.num_samples})")
    if args.save:
        torch.save({"log_px": ll, "elbo": elbo, "K": args.num_samples, "epochs": epochs, "cpu_s": cpu, "wall_s": wall,
                    "seed": args.seed, "example_args": example_args}, args.save)


# ------------------------------------------------------------------ compare (this repository's venv)


def per_beat(values, beats):
    """Sum over chorales per beat, and the standard error over chorales scaled to a beat."""
    n = values.numel()
    return float(values.sum()) / beats, float(values.std(unbiased=True) * math.sqrt(n)) / beats


def compare(argv):
    parser = argparse.ArgumentParser(prog="pyro_dmm_example.py compare")
    parser.add_argument("--reference", required=True, help="the file run --save wrote")
    parser.add_argument("--ours", required=True, help="a pyrovae fit run folder on bach-chorales")
    parser.add_argument("--num-samples", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    import pyro
    from pyrovae.data import load_dataset
    from pyrovae.evaluation.log_likelihood import iter_log_weights
    from pyrovae.infer.importance import log_mean_exp
    from pyrovae.training.run_folder import load_run

    saved = torch.load(args.reference, map_location="cpu")
    test = load_dataset("bach-chorales").test
    lengths = chorales()["test"][1]
    assert test["lengths"].tolist() == lengths.tolist(), "the test chorales are not in the npz's order"
    beats = float(lengths.sum())
    ours = load_run(args.ours)
    pyro.set_rng_seed(args.seed)
    ll, elbo = [], []
    with torch.no_grad():
        for log_w in iter_log_weights(ours.model, ours.guide, test, args.num_samples, 4):
            ll.append(log_mean_exp(log_w, 0))
            elbo.append(log_w.mean(0))
    mine = {"log_px": torch.cat(ll).double(), "elbo": torch.cat(elbo).double()}
    out = {"test_chorales": len(lengths), "beats": beats, "K": args.num_samples,
           "reference": {"epochs": saved["epochs"], "cpu_s": saved["cpu_s"], "wall_s": saved["wall_s"],
                         "example_args": saved["example_args"], "seed": saved["seed"]},
           "ours": {"run": str(args.ours), "epochs": ours.epoch}}
    for name in ("log_px", "elbo"):
        out["reference"][name + "_per_beat"] = per_beat(saved[name], beats)
        out["ours"][name + "_per_beat"] = per_beat(mine[name], beats)
        out["ours_minus_reference_" + name + "_per_beat"] = per_beat(mine[name] - saved[name], beats)
    print(json.dumps(out, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in ("run", "compare"):
        sys.exit(__doc__)
    (run if sys.argv[1] == "run" else compare)(sys.argv[2:])
