"""None means "the default": each default is written once, in the config that owns it.

The CLI passes None for every option the user did not give (Polygraphy's ``util.default``), and
a config class decorated with ``none_means_default`` fills in its own declared default. So a
library caller and the command line get the same value from the same line.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, TypeVar

T = TypeVar("T")


def default(value: T | None, fallback: T) -> T:
    """``value`` unless it is None (Polygraphy's ``util.default``)."""
    return fallback if value is None else value


def default_of(config_cls: type, name: str) -> Any:
    """The default a config dataclass declares for the field ``name``."""
    f = config_cls.__dataclass_fields__[name]
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    raise KeyError(f"{config_cls.__name__}.{name} has no default")


def none_means_default(cls: type[T]) -> type[T]:
    """Class decorator for a config dataclass: a field given as None (by keyword or position)
    takes the field's declared default, where that default is not None itself."""
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    owned = {n for n in names if _declared(cls, n) is not None}
    init = cls.__init__

    @functools.wraps(init)
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        both = set(names[:len(args)]) & set(kwargs)
        if len(args) > len(names) or both:  # what the plain dataclass __init__ would refuse
            raise TypeError(f"{cls.__name__}() takes {len(names)} fields; got {len(args)} "
                            f"positional, {sorted(both) or 'none'} twice")
        kwargs.update(zip(names, args))
        init(self, **{k: v for k, v in kwargs.items() if not (v is None and k in owned)})

    cls.__init__ = __init__  # type: ignore[method-assign]
    return cls


def _declared(cls: type, name: str) -> Any:
    try:
        return default_of(cls, name)
    except KeyError:  # required field: None is the caller's to answer for
        return None
