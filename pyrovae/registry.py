"""Name -> factory registries for models, guides and objectives.

Registration is by decorator, as in timm: a new pair registers itself where it is
defined and the CLI, the parametrized tests and :func:`pyrovae.load_run` find it by
name. There is no chain of ``if name == ...`` anywhere in the suite.

>>> from pyrovae.registry import register_model, get_model
>>> @register_model("my-vae")
... class MyVAE:
...     def __init__(self, x_dim: int, z_dim: int = 2):
...         self.x_dim, self.z_dim = x_dim, z_dim
>>> get_model("my-vae")(x_dim=4).z_dim
2
"""

from __future__ import annotations

import functools
import inspect
from typing import Callable, Dict


class Registry:
    """A named table of factories (classes or functions) of one kind.

    :param str kind: what the table holds ("model", "guide", "objective"), used in errors.
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._factories: Dict[str, Callable] = {}

    def register(self, name: str) -> Callable:
        """Decorator that adds a factory under ``name``."""

        def decorator(factory: Callable) -> Callable:
            existing = self._factories.get(name)
            if existing is not None and existing is not factory:
                if getattr(existing, "__qualname__", None) != getattr(factory, "__qualname__", None):
                    raise ValueError(
                        f"a {self.kind} named {name!r} is already registered "
                        f"({existing.__module__}.{existing.__qualname__}); pick another name"
                    )
            self._factories[name] = factory
            factory.registry_name = name
            if inspect.isclass(factory):
                _record_options(factory)
            return factory

        return decorator

    def get(self, name: str) -> Callable:
        try:
            return self._factories[name]
        except KeyError:
            raise ValueError(
                f"unknown {self.kind} {name!r}; registered {self.kind}s: {', '.join(self.names())}. "
                f"Register a new one with @register_{self.kind}({name!r})."
            ) from None

    def names(self) -> list:
        return sorted(self._factories)

    def __contains__(self, name: str) -> bool:
        return name in self._factories


MODELS = Registry("model")
GUIDES = Registry("guide")
OBJECTIVES = Registry("objective")

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


def constructor_options(factory: Callable) -> Dict[str, inspect.Parameter]:
    """The keyword arguments a factory accepts: its options, for the CLI and run files."""
    target = factory.__init__ if inspect.isclass(factory) else factory
    params = inspect.signature(target).parameters
    return {
        name: p
        for name, p in params.items()
        if name != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }


def _takes_var_keyword(factory: Callable) -> bool:
    target = factory.__init__ if inspect.isclass(factory) else factory
    return any(p.kind == p.VAR_KEYWORD for p in inspect.signature(target).parameters.values())


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
    return factory(**kwargs)


def _record_options(cls) -> None:
    """Wrap ``cls.__init__`` so each instance remembers the options it was built with
    (``instance._pyrovae_options``): enough to rebuild it from the registry when a run
    folder is loaded."""
    init = cls.__init__
    if getattr(init, "_records_options", False):
        return
    signature = inspect.signature(init)

    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        init(self, *args, **kwargs)
        bound = signature.bind(self, *args, **kwargs)
        bound.apply_defaults()
        options = {}
        for key, value in list(bound.arguments.items())[1:]:
            if signature.parameters[key].kind == inspect.Parameter.VAR_KEYWORD:
                options.update(value)
            elif signature.parameters[key].kind != inspect.Parameter.VAR_POSITIONAL:
                options[key] = value
        # the outermost __init__ finishes last, so a subclass's options win over its parent's
        self.__dict__["_pyrovae_options"] = options

    __init__._records_options = True
    cls.__init__ = __init__


def spec_of(obj) -> dict | None:
    """``{"name": ..., "options": {...}}`` for an instance of a registered class, else None.

    A subclass that did not register itself has no spec (its parent's name would rebuild
    the wrong class)."""
    name = type(obj).__dict__.get("registry_name")
    options = getattr(obj, "__dict__", {}).get("_pyrovae_options")
    if name is None or options is None:
        return None
    return {"name": name, "options": _jsonable(options)}


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"option value {value!r} cannot be saved in a run file (use plain numbers/strings)")
