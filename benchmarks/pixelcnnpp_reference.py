"""Run pclucas14/pixel-cnn-pp (a PyTorch PixelCNN++, Salimans et al. 2017) on 8-bit Fashion-MNIST at
the budget of benchmarks/fashion_bits.py: the reference of docs/autoregressive.md ("PixelCNN++ at
equal budget").

The repository's ``model.py`` (the network), ``layers.py`` and ``utils.py`` (the discretized logistic
mixture loss, ``discretized_mix_logistic_loss_1d``) are used as they are. Its ``main.py`` cannot run
on Python 3 or on a CPU (``input.cuda(async=True)`` is a syntax error since Python 3.7, ``loss.data[0]``
fails since torch 0.5, it calls ``.cuda()`` unconditionally and downloads MNIST with torchvision), so
this script replaces main.py only, doing what it does for ``--dataset mnist``:

    model = PixelCNN(nr_resnet, nr_filters, input_channels=1, nr_logistic_mix)
    optimizer = Adam(model.parameters(), lr); scheduler = StepLR(optimizer, 1, gamma=lr_decay)  # stepped per epoch
    per batch (shuffled, drop_last): x = ToTensor(image) rescaled to [-1, 1];
        loss = discretized_mix_logistic_loss_1d(x, model(x)) (a sum, nats); backward; step

Two adaptations, nothing else: ``utils.py`` is loaded with its one Python 2 statement
(``print e`` in ``load_part_of_model``, a function main.py uses only with ``--load_params``) written
as a call, and ``torch.Tensor.cuda`` returns the tensor itself (the loss builds its zeros with
``.cuda()``), so everything stays on the CPU. The data are the first ``--train-size`` images of
Fashion-MNIST's training IDX file (``$FASHION_IDX``, default ``$PYROVAE_DATA/fashion-mnist``) and
the same ``--test-size`` test images as benchmarks/fashion_bits.py (a fixed random subset, seed 0).

Afterwards, per test image, the repository's loss on that image alone (model.eval(): no dropout):
-log p(x) in nats, written with the run's CPU seconds to ``--out`` (JSON) for a paired comparison.

Setup, in a scratch folder outside this repository:

    git --git-dir=pixel-cnn-pp/.git archive 7cb4436 model.py layers.py utils.py | tar -x -C code
    cp PATH/TO/benchmarks/pixelcnnpp_reference.py run_ref.py
    OMP_NUM_THREADS=1 python run_ref.py --train-size 20000 --epochs 5 --out ref.json
"""
import argparse
import gzip
import json
import math
import os
import sys
import time
import types

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
CODE = os.path.join(HERE, "code")


def _load_reference():
    """The repository's modules, ``utils`` with its Python 2 print statement made a call."""
    source = open(os.path.join(CODE, "utils.py")).read()
    assert source.count("print e\n") == 1, "not the utils.py this script was written for"
    utils = types.ModuleType("utils")
    utils.__file__ = os.path.join(CODE, "utils.py")
    exec(compile(source.replace("print e\n", "print(e)\n"), utils.__file__, "exec"), utils.__dict__)
    sys.modules["utils"] = utils
    sys.path.insert(0, CODE)
    torch.Tensor.cuda = lambda self, *args, **kwargs: self  # the loss's .cuda() zeros stay on the CPU
    import model  # noqa: E402  (the repository's model.py, which imports layers and utils)
    return model, utils


def _idx(folder, name):
    path = os.path.join(folder, name)
    opener = gzip.open if os.path.exists(path) else open
    with opener(path if os.path.exists(path) else path[:-3], "rb") as f:
        raw = f.read()
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=os.environ.get("FASHION_IDX") or
                   os.path.join(os.environ.get("PYROVAE_DATA", "."), "fashion-mnist"))
    p.add_argument("--train-size", type=int, default=20000)
    p.add_argument("--test-size", type=int, default=500)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--nr-resnet", type=int, default=5)
    p.add_argument("--nr-filters", type=int, default=160)
    p.add_argument("--nr-logistic-mix", type=int, default=10)
    p.add_argument("--lr", type=float, default=0.0002)
    p.add_argument("--lr-decay", type=float, default=0.999995)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=None)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model_module, utils = _load_reference()

    torch.manual_seed(args.seed)  # as main.py
    np.random.seed(args.seed)
    rescaling = lambda x: (x - .5) * 2.  # noqa: E731  (main.py's)
    train_x = torch.from_numpy(_idx(args.data, "train-images-idx3-ubyte.gz")[: args.train_size].copy())
    test_all = torch.from_numpy(_idx(args.data, "t10k-images-idx3-ubyte.gz").copy())
    order = torch.randperm(len(test_all), generator=torch.Generator().manual_seed(0))
    test_x = test_all[order[: args.test_size]]
    to_input = lambda images: rescaling(images.float().div(255.).unsqueeze(1))  # noqa: E731  ToTensor + rescaling
    train_loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(train_x), batch_size=args.batch_size,
                                               shuffle=True, drop_last=True)

    model = model_module.PixelCNN(nr_resnet=args.nr_resnet, nr_filters=args.nr_filters, input_channels=1,
                                  nr_logistic_mix=args.nr_logistic_mix)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=args.lr_decay)
    loss_op = utils.discretized_mix_logistic_loss_1d
    bits = 784 * math.log(2.)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    epoch_cpu = []
    for epoch in range(args.epochs):
        t = time.process_time()
        model.train()
        total = 0.
        for (images,) in train_loader:
            x = to_input(images)
            loss = loss_op(x, model(x))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item()
        scheduler.step()
        epoch_cpu.append(time.process_time() - t)
        print(f"epoch {epoch + 1}: train {total / (len(train_loader) * args.batch_size * bits):.4f} bits/dim, "
              f"{epoch_cpu[-1]:.0f} CPU s", flush=True)
    train_cpu = time.process_time() - cpu0

    model.eval()
    nll = []
    with torch.no_grad():
        for start in range(0, len(test_x), args.batch_size):
            x = to_input(test_x[start: start + args.batch_size])
            model.init_padding = None  # the model caches its padding channel at the first batch's size
            out = model(x)
            nll += [loss_op(x[i: i + 1], out[i: i + 1]).item() for i in range(len(x))]
    nll = np.asarray(nll)
    mean, se = nll.mean(), nll.std(ddof=1) / math.sqrt(len(nll))
    print(f"test: {mean:.2f} ± {se:.2f} nats, {mean / bits:.4f} ± {se / bits:.4f} bits/dim on {len(nll)} images; "
          f"train {train_cpu:.0f} CPU s, {time.perf_counter() - wall0:.0f} wall s; "
          f"{sum(q.numel() for q in model.parameters())} parameters", flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"args": vars(args), "nll": nll.tolist(), "test_nll": mean, "test_nll_se": se,
                       "bits_per_dim": mean / bits, "bits_per_dim_se": se / bits, "train_cpu_s": train_cpu,
                       "epoch_cpu_s": epoch_cpu,
                       "num_parameters": sum(q.numel() for q in model.parameters())}, f, indent=1)


if __name__ == "__main__":
    main()
