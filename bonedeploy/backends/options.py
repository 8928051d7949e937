"""Declared backend options, checked once for every backend.

Each backend lists its options (name, type or choices, default, help) and the base class checks
what a caller passes against them, so every backend refuses an unknown option or a bad value the
same way, listing the valid ones. Values arrive as Python values (library callers, bench targets)
or as strings (``--backend-option threads=2``, selection records); both parse to the declared
type. ``None`` means "not given": the default applies, and a caller may pass ``device=None`` to a
backend that has no such option.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from bonedeploy.errors import ConfigError

TRUE, FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


@dataclass(frozen=True)
class Option:
    name: str
    help: str
    default: Any = None  # None: decided at load (the help says how), or the runtime's own default
    type: type = str  # str | int | float | bool; ignored when ``choices`` are given
    choices: tuple[str, ...] = ()  # lower-case; matched case-insensitively
    aliases: Mapping[str, str] = field(default_factory=dict)  # another spelling -> one of choices
    minimum: float | None = None  # numbers only
    note: str = ""  # said when a value is refused (where that value belongs instead)

    def parse(self, value: Any, owner: str) -> Any:
        """``value`` as the declared type; ``None`` gives the default."""
        if value is None:
            return self.default
        if self.choices:
            key = str(value).strip().lower()
            key = self.aliases.get(key, key)
            if key not in self.choices:
                raise self._refuse(value, "valid: " + ", ".join([*self.choices, *self.aliases]), owner)
            return key
        if self.type is bool:
            return self._flag(value, owner)
        if self.type in (int, float):
            return self._number(value, owner)
        return str(value)

    def _flag(self, value: Any, owner: str) -> bool:
        if isinstance(value, bool):
            return value
        key = str(value).strip().lower()
        if key in TRUE or key in FALSE:
            return key in TRUE
        raise self._refuse(value, "valid: " + ", ".join(TRUE + FALSE), owner)

    def _number(self, value: Any, owner: str) -> int | float:
        kind = "an integer" if self.type is int else "a number"
        expected = ("a positive integer" if self.type is int and self.minimum == 1 else
                    f"{kind} >= {self.minimum:g}" if self.minimum is not None else kind)
        try:
            if isinstance(value, bool) or (self.type is int and isinstance(value, float) and not value.is_integer()):
                raise ValueError(value)
            number = self.type(str(value).strip()) if isinstance(value, str) else self.type(value)
        except (TypeError, ValueError) as e:
            raise self._refuse(value, f"expected {expected}", owner) from e
        if self.minimum is not None and number < self.minimum:
            raise self._refuse(value, f"expected {expected}", owner)
        return number

    def _refuse(self, value: Any, valid: str, owner: str) -> ConfigError:
        note = f": {self.note}" if self.note else ""
        return ConfigError(f"{owner} backend: {self.name} {value!r}{note}; {valid}")

    def describe(self) -> str:
        """One line for help texts and docs: ``name`` (choices or type, default): help."""
        kind = "|".join(self.choices) if self.choices else self.type.__name__
        default = "" if self.default is None else f", default {self.default}"
        return f"{self.name} ({kind}{default}): {self.help}"


def check_options(owner: str, declared: Sequence[Option], given: Mapping[str, Any]) -> dict[str, Any]:
    """Every declared option's value (the default where not given); unknown ones are refused."""
    known = {o.name: o for o in declared}
    unknown = sorted(k for k, v in given.items() if k not in known and v is not None)
    if unknown:
        raise ConfigError(f"{owner} backend: unknown options {unknown}; valid options: {', '.join(known)}")
    return {name: o.parse(given.get(name), owner) for name, o in known.items()}
