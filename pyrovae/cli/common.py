"""What every ``pyrovae`` subcommand shares: the common flags, user modules and plugins,
CPU threads, flags derived from constructors, and loading a run with its data.

Common flags (every subcommand):

- ``--import MODULE`` (repeatable): import a module of yours first, so that its
  ``@register_model`` / ``@register_guide`` / ``@register_objective`` / ``register_dataset``
  entries exist. ``pyrovae fit`` records the imports in run.json and the other commands
  import them again from there.
- ``--threads N``: torch's CPU threads (default: :func:`default_threads`).
- ``--debug``: show the traceback of an error instead of its one-line message.
- ``--device`` (the commands that compute on one device): ``auto``, ``cpu`` or ``cuda``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import re
import sys
import typing
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional

from pyrovae.errors import PyrovaeError, UsageError
from pyrovae.models.base import FILLED as DATA_FILLED  # the sizes the data set determines

DATA_PREFERRED = ("likelihood",)  # options the data choose unless the flag is given (8-bit images)
PLUGIN_GROUP = "pyrovae.plugins"
SMALL_MODEL_FLOPS = 2_000_000  # multiply-adds per datapoint below which one thread is fastest


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line (exit status 2) and name ``--help``."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def add_common_flags(parser: argparse.ArgumentParser, device: bool = True) -> None:
    """Add ``--import``, ``--threads``, ``--debug`` (and ``--device``) to ``parser``."""
    parser.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                        help="import this module first (its registered models, guides, objectives, data sets); "
                             "repeatable")
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="torch CPU threads (default: 1 for small models or a busy machine, else the idle cores)")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    if device:
        parser.add_argument("--device", default="auto", help="auto | cpu | cuda (default: auto)")


def pre_parse(argv: List[str], *flags: str) -> argparse.Namespace:
    """The common flags and ``flags`` (``--name``, string-valued) of ``argv``, ignoring the rest."""
    pre = argparse.ArgumentParser(add_help=False)
    add_common_flags(pre, device=False)
    for flag in flags:
        pre.add_argument(flag, default=None)
    pre.add_argument("--resume", action="store_true")
    return pre.parse_known_args(argv)[0]


# ---------------------------------------------------------------- user modules and plugins


def import_modules(names: Iterable[str], recorded_in: Optional[Path] = None) -> List[str]:
    """Import each module of ``names`` (the current folder first on ``sys.path``, as
    ``python -m`` does); the names, in order and without repeats.

    :param recorded_in: the run.json that listed them (for the error message), or None for ``--import``.
    :raises UsageError: (``--import``) or :class:`PyrovaeError` (run.json) naming a module that fails.
    """
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    done: List[str] = []
    for name in names:
        if name in done:
            continue
        try:
            importlib.import_module(name)
        except ImportError as error:
            where = f"{recorded_in} lists --import {name}" if recorded_in else f"--import {name}"
            cls = PyrovaeError if recorded_in else UsageError
            raise cls(f"{where}, which cannot be imported ({error}); run from the folder that holds "
                      f"{name.split('.')[0]} or add it to PYTHONPATH") from error
        done.append(name)
    return done


def load_plugins() -> List[str]:
    """Load every entry point of the group ``pyrovae.plugins`` (a module, or a function
    called with no arguments); their names."""
    from importlib.metadata import entry_points

    names = []
    for entry in entry_points(group=PLUGIN_GROUP):
        try:
            loaded = entry.load()
            if callable(loaded) and not isinstance(loaded, type):
                loaded()
        except Exception as error:
            raise PyrovaeError(f"the plugin {entry.name!r} ({entry.value}, entry point group {PLUGIN_GROUP}) "
                               f"failed to load: {type(error).__name__}: {error}") from error
        names.append(entry.name)
    return names


def saved_run_config(run_dir) -> Optional[dict]:
    """The run.json of ``run_dir``, or None where there is none."""
    path = Path(run_dir) / "run.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise PyrovaeError(f"{path} is not valid JSON ({error}); the run folder is damaged") from error


# ---------------------------------------------------------------- threads


def default_threads(flops_per_datapoint: Optional[int] = None) -> int:
    """Torch CPU threads when ``--threads`` is not given.

    One thread for a model under :data:`SMALL_MODEL_FLOPS` multiply-adds per datapoint (more
    only add synchronisation, measured in docs/cli.md); otherwise the cores this process may
    use that the 1-minute load average does not already keep busy, at least one. OpenMP threads
    that wait for a core another process holds make a step many times slower.
    """
    if flops_per_datapoint is not None and flops_per_datapoint < SMALL_MODEL_FLOPS:
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    busy = math.ceil(os.getloadavg()[0]) if hasattr(os, "getloadavg") else 0
    return max(1, cores - busy)


def set_threads(threads: Optional[int], flops_per_datapoint: Optional[int] = None) -> int:
    """Set torch's CPU threads to ``threads`` (or the default); the number set."""
    import torch

    if threads is not None and threads < 1:
        raise UsageError(f"--threads must be >= 1, got {threads}")
    threads = threads or default_threads(flops_per_datapoint)
    torch.set_num_threads(threads)
    return threads


def linear_flops(*modules) -> int:
    """Multiply-adds per datapoint of the ``nn.Linear`` layers of ``modules`` (a size measure)."""
    import torch

    return sum(m.in_features * m.out_features for module in modules if isinstance(module, torch.nn.Module)
               for m in module.modules() if isinstance(m, torch.nn.Linear))


# ---------------------------------------------------------------- devices


def resolve_device(name: str):
    """``auto`` -> CUDA where present, else CPU; :class:`UsageError` for an unusable device."""
    import torch

    try:
        device = torch.device("cuda" if name == "auto" and torch.cuda.is_available() else
                              ("cpu" if name == "auto" else name))
    except RuntimeError as error:
        raise UsageError(f"--device {name}: not a device ({error}); use auto, cpu or cuda") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {name}: CUDA is not available here (torch {torch.__version__}, "
                         f"{'built without CUDA' if torch.version.cuda is None else 'no GPU found'}); "
                         "use --device cpu or --device auto")
    return device


# ---------------------------------------------------------------- flags from constructors


def _flag_kwargs(name: str, annotation, default) -> dict:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Union and type(None) in args:
        inner = [a for a in args if a is not type(None)]
        annotation = inner[0] if len(inner) == 1 else str
        origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is bool:
        return {"action": argparse.BooleanOptionalAction, "default": default}
    if origin in (tuple, list):
        return {"nargs": "*", "type": args[0] if args else int, "default": default, "metavar": name.upper()}
    if origin is typing.Literal:
        return {"type": type(args[0]), "default": default}
    if annotation in (int, float, str):
        return {"type": annotation, "default": default, "metavar": name.upper()}
    return {"type": str, "default": default, "metavar": name.upper()}


def help_text(text: str) -> str:
    """A docstring's reST (``literal``, :role:`target`) as plain text for ``--help``."""
    text = re.sub(r":\w+:`~?([^`]*)`", r"\1", text).replace("``", "")
    return " ".join(text.split()).replace("%", "%%")  # argparse formats help with %


def _shown(value) -> str:
    return " ".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


def option_flags(factories: List[Callable], defaults: Optional[dict] = None) -> Dict[str, dict]:
    """``{option_name: argparse kwargs}`` for the options of ``factories`` (``z_dim: int = 20``
    becomes ``--z-dim``; a name shared by two factories sets both): the help is the option's
    ``:param`` line, the choices its ``Literal`` (or declared ``choices``), and ``"flag"`` the
    flag, ``--`` and the option's name with ``-`` for ``_`` unless its field's metadata names
    another (``num_particles`` is ``--particles``). Options whose metadata has ``"flag": None``,
    and the sizes the data fills, are left out. ``defaults`` replaces declared defaults by
    name, each said in the help as ``(default: V, WHOSE)`` for ``{name: (V, WHOSE)}``."""
    from pyrovae.registry import constructor_options, option_choices, option_help, option_hints, option_metadata

    flags: Dict[str, dict] = {}
    texts: Dict[str, Dict[str, str]] = {}  # option -> {factory name: its help}
    for factory in factories:
        hints, helps = option_hints(factory), option_help(factory)
        choices, metadata = option_choices(factory), option_metadata(factory)
        owner = getattr(factory, "registry_name", factory.__name__)
        for name, param in constructor_options(factory).items():
            flag = metadata.get(name, {}).get("flag", name)  # None: no flag
            if name in DATA_FILLED or flag is None:
                continue
            texts.setdefault(name, {})[owner] = help_text(helps[name]).rstrip(".") if name in helps else ""
            if name in flags:  # shared: the first factory's default and type, both helps
                continue
            default = None if param.default is param.empty else param.default
            if name in (defaults or {}):
                default = defaults[name][0]
            kwargs = _flag_kwargs(name, hints.get(name, type(default) if default is not None else str), default)
            if "metavar" in kwargs:
                kwargs["metavar"] = flag.upper().replace("-", "_")
            if name in choices:
                kwargs.pop("metavar", None)
                kwargs.update(choices=choices[name], type=type(choices[name][0]))
            kwargs["flag"] = "--" + flag.replace("_", "-")
            if name in DATA_PREFERRED:  # unset unless given, so that the data's choice can stand
                kwargs["default"], kwargs["data_preferred"] = None, default
            flags[name] = kwargs
    for name, kwargs in flags.items():
        described = {owner: text for owner, text in texts[name].items() if text}
        if len(set(described.values())) > 1:
            text = "; ".join(f"{owner}: {text}" for owner, text in described.items())
        else:
            text = next(iter(described.values()), f"{', '.join(texts[name])} option")
        default = kwargs["default"]
        shown = default is not None and kwargs.get("action") is not argparse.BooleanOptionalAction  # it says itself
        whose = f", {defaults[name][1]}" if name in (defaults or {}) else ""
        kwargs["help"] = text + (f" (default: {help_text(_shown(default))}{whose})" if shown else "")
        if "data_preferred" in kwargs:
            kwargs["help"] = text + (" (default: the data's: logistic-mixture for 8-bit images, where the model has "
                                     f"it; else {kwargs.pop('data_preferred')})")
    return flags


def add_option_flags(parser, factories: List[Callable], dest_prefix: str = "", skip=(),
                     defaults: Optional[dict] = None) -> List[str]:
    """Add the flags of :func:`option_flags` (with its ``defaults``) to ``parser`` (or an
    argument group), each stored under ``dest_prefix + option name``; the option names added."""
    added = []
    for name, kwargs in option_flags(factories, defaults).items():
        if name not in skip:
            flag = kwargs.pop("flag")
            parser.add_argument(flag, dest=dest_prefix + name, **kwargs)
            added.append(name)
    return added


def options_for(factory, values: dict) -> dict:
    """The entries of ``values`` that ``factory`` accepts, lists as tuples."""
    from pyrovae.registry import constructor_options

    accepted = constructor_options(factory)
    return {k: (tuple(v) if isinstance(v, list) else v) for k, v in values.items() if k in accepted}


def said_with_flags(message: str, names) -> str:
    """``message`` (an option's check, written for Python) with each option name in ``names``
    said as its flag: ``num_bins must be ...`` -> ``--num-bins must be ...``,
    ``binarize='dynamic'`` -> ``--binarize dynamic``.

    >>> said_with_flags("num_bins must be at least 2; or pass scale=None", ["num_bins", "scale"])
    '--num-bins must be at least 2; or pass --scale None'

    ``names`` may map each name to its flag (:func:`flag_names`: ``num_particles`` is ``--particles``).
    """
    flags = names if isinstance(names, dict) else {}
    for name in sorted(set(names) - set(DATA_FILLED), key=len, reverse=True):
        flag = flags.get(name) or "--" + name.replace("_", "-")
        message = re.sub(rf"(?<![\w.-]){re.escape(name)}='([^']*)'", lambda m: f"{flag} {m.group(1)}", message)
        message = re.sub(rf"(?<![\w.-]){re.escape(name)}=", flag + " ", message)
        message = re.sub(rf"(?<![\w.'\"-]){re.escape(name)}(?![\w'\"(-])", flag, message)
    return message


def build_with_flags(factory, options: dict, fill: dict):
    """:func:`~pyrovae.registry.build` for the command line: an option's failed check becomes
    a :class:`UsageError` that names the flags (:func:`said_with_flags`)."""
    from pyrovae.registry import build

    try:
        return build(factory, options, fill=fill)
    except ValueError as error:
        raise UsageError(said_with_flags(str(error), flag_names(factory))) from None


def flag_names(factory) -> Dict[str, str]:
    """``{option: its flag}`` for the options of ``factory`` (``--`` and the name with ``-`` for
    ``_``, or the flag its field's metadata names)."""
    from pyrovae.registry import constructor_options, option_metadata

    metadata = option_metadata(factory)
    return {name: "--" + (metadata.get(name, {}).get("flag") or name).replace("_", "-")
            for name in constructor_options(factory)}


def fill_for(factory, dims: dict) -> dict:
    """The data's sizes for ``factory``'s options, with the likelihood the data want made one
    the model has (:func:`~pyrovae.data.files.likelihood_for`: 8-bit images get
    ``logistic-mixture`` where the model has it, else ``continuous_bernoulli`` or ``gaussian``)."""
    from pyrovae.data.files import likelihood_for

    fill = {k: v for k, v in dims.items() if k != "likelihood"}
    chosen = likelihood_for(factory, dims.get("likelihood"))
    return {**fill, "likelihood": chosen} if chosen else fill


# ---------------------------------------------------------------- runs and their data


def add_weights_flag(parser) -> None:
    """``--weights best|last``: which of a run's parameters a command reads."""
    parser.add_argument("--weights", default="best", choices=["best", "last"],
                        help="the run's parameters to read: best (those of its best validation ELBO's epoch, the "
                             "run's result; the last where it kept no other) or last (the last epoch's)")


def load_run(args, saved: dict):
    """The run of ``args.run`` on ``args.device`` (its ``--weights``) and its data set, after
    importing the modules its run.json lists; ``(run, dataset, device)``. The data is checked
    against the run first (for data read from a path: that its files are those the run read).
    Weights of another epoch than the last are named on stderr."""
    from pyrovae.training.run_folder import load_run as load

    import_modules(args.imports)
    import_modules(saved.get("imports") or [], recorded_in=Path(args.run) / "run.json")
    device = resolve_device(args.device)
    dataset = run_data(saved, args)
    run = load(args.run, device=device, weights=getattr(args, "weights", "best"))
    if run.weights_epoch is not None and run.weights_epoch != run.epoch:
        print(f"note: reading the weights of epoch {run.weights_epoch}, the run's best validation ELBO, of the "
              f"{run.epoch} it finished (--weights last: the last epoch's)", file=sys.stderr)
    return run, dataset.to(device), device


def require_run(path) -> dict:
    """The run.json of the run folder ``path``; :class:`UsageError` if it is not one."""
    saved = saved_run_config(path)
    if saved is None:
        raise UsageError(f"{path} is not a run folder (no run.json); pass the --out folder of a pyrovae fit")
    return saved


def load_data(spec: str, data_dir=None, binarize=None, image_size=None, color=None):
    """``--data SPEC``: a registered data set name wins; else a folder of images, a ``.npy`` /
    ``.npz`` file or ``module:function`` (a :class:`~pyrovae.data.UserData`); else the
    one-line unknown-data error."""
    from pyrovae.data.datasets import DataFormatError, load_dataset
    from pyrovae.data.files import load_data_path
    from pyrovae.data.inputs import is_data_path

    try:
        if is_data_path(spec):
            return load_data_path(spec, image_size=image_size, color=color, binarize=binarize or "none")
        if image_size is not None:
            raise UsageError(f"--image-size applies to a folder of images, not to data set {spec!r}")
        return load_dataset(spec, data_dir=data_dir, binarize=binarize)
    except ValueError as error:  # a check written for Python (binarize='dynamic'): say it with the flags
        if isinstance(error, (PyrovaeError, DataFormatError)):
            raise
        raise UsageError(said_with_flags(str(error), ("binarize", "image_size", "color"))) from None


def run_data(saved: dict, args):
    """The data set the run was fit on (from ``--data-dir`` or the folder it was fit with, or
    the path it read, verified against run.json's record), refused in one line if its rows are
    not as wide as the run's ``x_dim``."""
    from pyrovae.data.datasets import load_dataset
    from pyrovae.data.files import load_data_path, verify

    data = saved.get("data") or {}
    name = data.get("name")
    files = data.get("files")
    if files is not None:  # read from a path: the same files, read the same way
        verify(files)  # DataChangedError (one line, exit 1) if they changed
        options = files.get("options") or {}
        image_size = options.get("image_size")
        dataset = load_data_path(files["path"], image_size=tuple(image_size) if isinstance(image_size, list)
                                 else image_size, color=options.get("color") if files["kind"] == "images" else None,
                                 valid_fraction=options.get("valid_fraction", 0.1),
                                 test_fraction=options.get("test_fraction", 0.1),
                                 binarize=data.get("binarize") or "none")
        where, shape = f" from {files['path']}", dataset.image_shape
    elif name is None:
        raise UsageError(f"{args.run} was fit on tensors or a Dataset from Python, not on a named data set or a "
                         "path; evaluate it with the Python API")
    else:
        data_dir = args.data_dir or saved.get("data_dir")
        check_data_dir(data_dir)
        dataset = load_dataset(name, data_dir=data_dir, binarize=data.get("binarize"))
        where, shape = f" from {data_dir}" if data_dir else "", dataset.image_shape
    x_dim = (data.get("dims") or {}).get("x_dim")
    if x_dim is not None and dataset.x_dim != x_dim:
        raise PyrovaeError(
            f"the run's model takes x_dim={x_dim} columns but data set {name!r}{where} has rows of "
            f"{dataset.x_dim} (images {'x'.join(map(str, shape))}); use the data it was fit on, flattened to "
            f"(N, {x_dim})")
    return dataset


def split_rows(dataset, split: str, n: Optional[int] = None) -> dict:
    """The first ``n`` rows (all for None) of a named data set's or a path's ``split``, as tensors."""
    if hasattr(dataset, "rows"):
        return dataset.rows(split, n)
    data = getattr(dataset, split)
    return data if n is None else {k: v[:n] for k, v in data.items()}


def check_data_dir(data_dir) -> None:
    """:class:`UsageError` for a ``--data-dir`` that is not a folder (no silent fallback)."""
    if data_dir is not None and not Path(data_dir).expanduser().is_dir():
        raise UsageError(f"--data-dir {data_dir}: no such folder; pass the folder that holds the data "
                         "set's files (or its folder, e.g. DIR/mnist)")


def refuse_overwrite(path: Path, force: bool, other_name: bool = False) -> None:
    """:class:`UsageError` if ``path`` exists and ``force`` is not set; ``other_name``: the
    command has ``--out`` to choose another name."""
    if path.exists() and not force:
        raise UsageError(f"{path} exists (an earlier result with the same settings); pass --force to replace "
                         "it" + (", or --out for another name" if other_name else ""))


def write_public(path: Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` then rename the file to ``path`` with mode 0644 (readable by all,
    like other tools' outputs)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp{path.suffix}")
    try:
        write(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def cycled_rows(split: Dict, n: int):
    """Row indices ``0 .. n-1`` of ``split``, cycling when it has fewer than ``n`` rows."""
    import torch

    first = next(iter(split.values()))
    return torch.arange(n, device=first.device) % first.shape[0]
