"""Name -> factory registries for models, guides and objectives.

Registration is by decorator, as in timm: a new pair registers itself where it is
defined and the CLI, the parametrized tests and :func:`pyrovae.load_run` find it by
name. There is no chain of ``if name == ...`` anywhere in the suite.

**Options are declared once.** A class's options (what the CLI turns into flags, what
``pyrovae list`` shows, what a run folder saves to rebuild it) are the fields of its
``Options`` dataclass; :class:`Configurable` builds ``self.options`` from the constructor's
arguments, and a subclass extends its parent's ``Options`` with its own fields only. The
registry reads that declaration; it never wraps a constructor:

>>> from dataclasses import dataclass
>>> from pyrovae.registry import Configurable, constructor_options, get_model, register_model, spec_of
>>> @register_model("my-vae")
... class MyVAE(Configurable):
...     @dataclass
...     class Options:
...         x_dim: int
...         z_dim: int = 2
>>> model = get_model("my-vae")(x_dim=4)
>>> model.options.z_dim, list(constructor_options(MyVAE))
(2, ['x_dim', 'z_dim'])
>>> spec_of(model)
{'name': 'my-vae', 'options': {'x_dim': 4, 'z_dim': 2}}

A class without ``Options`` (a plain ``__init__``) still works: its options are the
keyword arguments of its constructor, and an instance's values are those :func:`build`
passed, or else its attributes of the same names (scikit-learn's ``get_params`` rule).

**Each option is described once, where it is declared.** Its help is the ``:param`` line of
the class docstring (reST, as Pyro documents its arguments; a subclass inherits its parents'
lines), and a field annotated with a ``Literal`` has those choices: ``pyrovae fit --help``
shows both, argparse refuses another value in one line, and so does the constructor:

>>> import typing
>>> @register_model("my-vae-2")
... class MyVAE2(Configurable):
...     '''A model.
...
...     :param str likelihood: how x is scored given z.
...     '''
...     @dataclass
...     class Options:
...         likelihood: typing.Literal["bernoulli", "gaussian"] = "bernoulli"
>>> option_help(MyVAE2), option_choices(MyVAE2)
({'likelihood': 'how x is scored given z.'}, {'likelihood': ('bernoulli', 'gaussian')})
>>> MyVAE2(likelihood="poisson")
Traceback (most recent call last):
...
ValueError: unknown likelihood 'poisson'; choose one of ('bernoulli', 'gaussian')
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import re
import typing
from typing import Callable, Dict, Optional

from pyrovae.errors import did_you_mean


class Registry:
    """A named table of factories (classes or functions) of one kind.

    :param str kind: what the table holds ("model", "guide", "objective", "dataset"), used in errors.
    :param callable key: maps a name asked for to the name it is stored under (default: itself).
    """

    def __init__(self, kind: str, key: Callable[[str], str] = str):
        self.kind, self.key = kind, key
        self._factories: Dict[str, Callable] = {}

    def register(self, name: str) -> Callable:
        """Decorator that adds a factory under ``name``.

        A name is taken once: registering another factory under it raises, naming both. The
        same definition registered again (its module imported twice, or reloaded) replaces
        the old one, so reloading a module that registers is not an error.

        >>> table = Registry("model")
        >>> first = table.register("a")(type("A", (), {}))
        >>> again = table.register("a")(first)  # the same class: fine
        >>> table.register("a")(type("B", (), {}))
        Traceback (most recent call last):
        ...
        ValueError: a model named 'a' is already registered (...A); ...B cannot take the name too: pick another name
        """

        def decorator(factory: Callable) -> Callable:
            existing = self._factories.get(name)
            if existing is not None and existing is not factory and _origin(existing) != _origin(factory):
                raise ValueError(
                    f"a {self.kind} named {name!r} is already registered ({'.'.join(_origin(existing))}); "
                    f"{'.'.join(_origin(factory))} cannot take the name too: pick another name"
                )
            self._factories[name] = factory
            factory.registry_name = name
            return factory

        return decorator

    def get(self, name: str) -> Callable:
        try:
            return self._factories[self.key(name)]
        except KeyError:
            hint = did_you_mean(name, self.names())
            raise ValueError(
                f"unknown {self.kind} {name!r};{hint or ''} registered {self.kind}s: {', '.join(self.names())}. "
                f"Register a new one with @register_{self.kind}({name!r}) (from the command line: in a module "
                "given to --import MODULE)."
            ) from None

    def names(self) -> list:
        return sorted(self._factories)

    def __contains__(self, name: str) -> bool:
        return self.key(name) in self._factories


def _origin(factory: Callable) -> tuple:
    """(module, qualified name): where a factory is defined, the same for a reloaded module."""
    return (str(getattr(factory, "__module__", "?")), str(getattr(factory, "__qualname__", repr(factory))))


MODELS = Registry("model")
GUIDES = Registry("guide")
OBJECTIVES = Registry("objective")
#: data set loaders ``loader(data_dir, binarize, valid_size) -> DataSet``; ``_`` may stand for ``-``
DATASETS = Registry("dataset", key=lambda name: name.lower().replace("_", "-"))

register_model = MODELS.register
register_guide = GUIDES.register
register_objective = OBJECTIVES.register
get_model = MODELS.get
get_guide = GUIDES.get
get_objective = OBJECTIVES.get


def list_models() -> list:
    return MODELS.names()


def list_guides() -> list:
    return GUIDES.names()


def list_objectives() -> list:
    return OBJECTIVES.names()


class Configurable:
    """Mixin of a class whose constructor options are the fields of its dataclass ``Options``.

    ``Cls(*args, **kwargs)`` sets ``self.options = Cls.Options(*args, **kwargs)`` (validation
    lives in the dataclass's ``__post_init__``), then the class's ``__init__`` builds what the
    options describe. A subclass declares ``class Options(Parent.Options)`` with only its
    own fields, or a field of the parent's with another default. ``inspect.signature(Cls)``
    shows the options.
    """

    Options: typing.ClassVar[type]

    def __init__(self, *args, **kwargs):
        super().__init__()
        check_choices(type(self), args, kwargs)
        try:
            self.options = self.Options(*args, **kwargs)
        except TypeError as error:  # name the class, not its Options, and what it accepts
            accepted = ", ".join(f.name for f in dataclasses.fields(self.Options))
            message = str(error).replace(f"{self.Options.__qualname__}.__init__()", type(self).__name__)
            raise TypeError(f"{message} (its options: {accepted})") from None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        declared = declared_options(cls)
        if declared is not None:
            cls.__signature__ = options_signature(declared)


def declared_options(factory: Callable) -> Optional[type]:
    """The ``Options`` dataclass a class declares (or inherits), else None."""
    options = getattr(factory, "Options", None) if inspect.isclass(factory) else None
    return options if inspect.isclass(options) and dataclasses.is_dataclass(options) else None


def options_signature(options: type) -> inspect.Signature:
    """The signature ``(field=default, ...)`` of an options dataclass, types resolved
    (``kw_only`` fields are keyword-only, after the others, as the dataclass takes them)."""
    hints = typing.get_type_hints(options)
    params = []
    fields = dataclasses.fields(options)
    for field in sorted(fields, key=lambda f: bool(getattr(f, "kw_only", False))):
        if not field.init:
            continue
        if field.default is not dataclasses.MISSING:
            default = field.default
        elif field.default_factory is not dataclasses.MISSING:
            default = field.default_factory()
        else:
            default = inspect.Parameter.empty
        kind = inspect.Parameter.KEYWORD_ONLY if getattr(field, "kw_only", False) else \
            inspect.Parameter.POSITIONAL_OR_KEYWORD
        params.append(inspect.Parameter(field.name, kind, default=default,
                                        annotation=hints.get(field.name, inspect.Parameter.empty)))
    return inspect.Signature(params)


def constructor_options(factory: Callable) -> Dict[str, inspect.Parameter]:
    """The options a factory accepts, ``{name: inspect.Parameter}`` (default, type): the
    fields of its ``Options`` dataclass, else its constructor's keyword arguments."""
    declared = declared_options(factory)
    if declared is not None:
        return dict(options_signature(declared).parameters)
    params = _signature(factory).parameters
    return {
        name: p
        for name, p in params.items()
        if name != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }


def option_hints(factory: Callable) -> Dict[str, object]:
    """The type annotations of a factory's options (``{}`` where they do not resolve)."""
    target = _options_class(factory) or (factory.__init__ if inspect.isclass(factory) else factory)
    try:
        return typing.get_type_hints(target)
    except Exception:  # a hint that does not resolve: no type known
        return {}


_PARAM_LINE = re.compile(r"^:param\s+([^:]+):\s*(.*)$")


def docstring_params(doc: Optional[str]) -> Dict[str, str]:
    """``{name: text}`` of the ``:param [type] name: text`` lines of a reST docstring (a
    line's indented continuation joined to it; ``:param int a, b: text`` describes both)."""
    params: Dict[str, str] = {}
    lines = inspect.cleandoc(doc or "").splitlines()
    for i, line in enumerate(lines):
        match = _PARAM_LINE.match(line)
        if match is None:
            continue
        text = [match.group(2)]
        for more in lines[i + 1:]:
            if not more[:1].isspace() or not more.strip():
                break
            text.append(more.strip())
        for part in match.group(1).split(","):
            name = (part.split() or [""])[-1]
            if name.isidentifier():
                params[name] = " ".join(t for t in text if t)
    return params


def option_help(factory: Callable) -> Dict[str, str]:
    """``{option: help}`` from the ``:param`` lines of the docstrings of ``factory`` (a class:
    its own and its parents', and their ``Options``), the first found winning."""
    found: Dict[str, str] = {}
    for owner in (inspect.getmro(factory) if inspect.isclass(factory) else (factory,)):
        for holder in (owner, vars(owner).get("Options") if inspect.isclass(owner) else None):
            if holder is not None and holder.__doc__ and (holder is factory or "__doc__" in vars(holder)):
                for name, text in docstring_params(holder.__doc__).items():
                    found.setdefault(name, text)
    return {name: found[name] for name in constructor_options(factory) if name in found}


def literal_choices(annotation) -> Optional[tuple]:
    """The values of a ``Literal[...]`` annotation (inside ``Optional`` too), else None."""
    if typing.get_origin(annotation) is typing.Union:
        inner = [a for a in typing.get_args(annotation) if a is not type(None)]
        annotation = inner[0] if len(inner) == 1 else None
    return typing.get_args(annotation) if typing.get_origin(annotation) is typing.Literal else None


def option_metadata(factory: Callable) -> Dict[str, dict]:
    """``{option: metadata}`` of the fields of a factory's ``Options`` (``{}`` without one):
    ``"flag"`` names the command-line flag (default: the option's name), ``"choices"`` lists
    the values allowed where a ``Literal`` cannot (they come from code), ``"flag": None``
    keeps an option off the command line, ``"saved_default"`` is the default a changed
    default replaced (:func:`saved_options`)."""
    declared = _options_class(factory)
    return {f.name: dict(f.metadata) for f in dataclasses.fields(declared)} if declared is not None else {}


def saved_options(factory: Callable, options: dict) -> dict:
    """``options`` of a run saved by older code (run.json), completed for this code: an option
    the run does not name whose field declares ``metadata={"saved_default": value}`` (its
    default before the default changed) gets that value, so the run is rebuilt as it was
    trained; any other option it does not name takes its declared default (in :func:`build`)."""
    before = {name: meta["saved_default"] for name, meta in option_metadata(factory).items()
              if "saved_default" in meta and name not in options}
    return {**options, **before}


def _options_class(factory: Callable) -> Optional[type]:
    """The dataclass declaring ``factory``'s options: its ``Options``, or itself (``FitOptions``)."""
    declared = declared_options(factory)
    if declared is None and inspect.isclass(factory) and dataclasses.is_dataclass(factory):
        return factory
    return declared


@functools.lru_cache(maxsize=None)
def option_choices(factory: Callable) -> Dict[str, tuple]:
    """``{option: allowed values}`` for the options annotated with a ``Literal`` or declared
    with ``metadata={"choices": ...}``."""
    hints, metadata = option_hints(factory), option_metadata(factory)
    choices = {name: metadata.get(name, {}).get("choices") or literal_choices(hints.get(name))
               for name in constructor_options(factory)}
    return {name: tuple(values) for name, values in choices.items() if values is not None}


def check_choices(factory: Callable, args: tuple, kwargs: dict) -> None:
    """:class:`ValueError` naming the option and its choices when a value given for a
    ``Literal`` option is not one of them (None passes where the option is ``Optional``)."""
    choices = option_choices(factory)
    if not choices:
        return
    names = [n for n, p in constructor_options(factory).items() if p.kind == p.POSITIONAL_OR_KEYWORD]
    for name, value in {**dict(zip(names, args)), **kwargs}.items():
        allowed = choices.get(name)
        if allowed is not None and value not in allowed and not (value is None and value is _default(factory, name)):
            raise ValueError(f"unknown {name} {value!r}; choose one of {allowed}")


def _default(factory: Callable, name: str):
    param = constructor_options(factory)[name]
    return None if param.default is param.empty else param.default


def _signature(factory: Callable) -> inspect.Signature:
    return inspect.signature(factory.__init__ if inspect.isclass(factory) else factory)


def _takes_var_keyword(factory: Callable) -> bool:
    if declared_options(factory) is not None:
        return False
    return any(p.kind == p.VAR_KEYWORD for p in _signature(factory).parameters.values())


def build(factory: Callable, options: dict, fill: dict | None = None):
    """Call ``factory`` with the ``options`` it accepts, plus ``fill`` values (e.g. ``x_dim``
    from the data) for the arguments it accepts that ``options`` does not set."""
    accepted = constructor_options(factory)
    unknown = set(options) - set(accepted)
    if unknown and not _takes_var_keyword(factory):
        raise ValueError(
            f"{getattr(factory, 'registry_name', factory.__name__)} got unknown option(s) "
            f"{sorted(unknown)}; it accepts {sorted(accepted)}"
        )
    kwargs = {k: v for k, v in (fill or {}).items() if k in accepted}
    kwargs.update(options)
    built = factory(**kwargs)
    if inspect.isclass(factory) and declared_options(factory) is None and hasattr(built, "__dict__"):
        # a class without an Options declaration: remember what it was built with
        bound = _signature(factory).bind_partial(None, **kwargs)
        bound.apply_defaults()
        values = dict(list(bound.arguments.items())[1:])
        for name, param in _signature(factory).parameters.items():
            if param.kind == param.VAR_KEYWORD:
                values.update(values.pop(name, {}))
            elif param.kind == param.VAR_POSITIONAL:
                values.pop(name, None)
        built.__dict__["_pyrovae_options"] = values
    return built


def options_of(obj) -> Optional[dict]:
    """The options that rebuild ``obj``: its ``options`` dataclass as a dict; for a class
    without one, what :func:`build` passed, else its attributes named like its constructor's
    arguments (None where one is missing)."""
    state = getattr(obj, "__dict__", {})
    declared = declared_options(type(obj))
    if declared is not None:
        options = state.get("options")
        return dataclasses.asdict(options) if isinstance(options, declared) else None
    if "_pyrovae_options" in state:
        return state["_pyrovae_options"]
    values = {}
    for name in constructor_options(type(obj)):
        if name not in state or not _plain(state[name]):
            return None
        values[name] = state[name]
    return values


def spec_of(obj) -> dict | None:
    """``{"name": ..., "options": {...}}`` for an instance of a registered class, else None;
    a class registered outside pyrovae also gives ``"module"``, the module that registers it
    (what ``--import`` must name to rebuild it in another process).

    A subclass that did not register itself has no spec (its parent's name would rebuild
    the wrong class)."""
    name = type(obj).__dict__.get("registry_name")
    options = options_of(obj) if name is not None else None
    if options is None:
        return None
    spec = {"name": name, "options": _jsonable(options)}
    module = type(obj).__module__
    if module.split(".")[0] != "pyrovae" and module != "builtins":  # builtins: a class made by exec(), no module
        spec["module"] = module
    return spec


def import_hint(spec: dict) -> str:
    """How to make the registered name of ``spec`` (a run.json entry) known in this process."""
    module = spec.get("module")
    if module == "__main__":
        return ("it was registered by the script that ran the fit; move its class into a module and import that "
                "module first (pyrovae: --import MODULE)")
    if module:
        return f"import {module} first (pyrovae: --import {module})"
    return "import the module that registers it first (pyrovae: --import MODULE)"


def _plain(value) -> bool:
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    return value is None or isinstance(value, (bool, int, float, str))


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"option value {value!r} cannot be saved in a run file (use plain numbers/strings)")


def pair_guide(model, guide):
    """Join a guide that reads its model to the model it is paired with: a guide with a
    ``bind_model`` method (as Pyro's autoguides are built from their model; the ladder guide reads
    the model's top-down network) gets ``guide.bind_model(model)``, any other guide is left as it is.
    Called wherever the suite builds a pair by name (``pyrovae fit``, ``load_run``). Returns ``guide``."""
    bind = getattr(guide, "bind_model", None)
    if callable(bind):
        bind(model)
    return guide
