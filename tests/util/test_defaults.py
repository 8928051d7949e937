"""``none_means_default``: None from a caller (the CLI's "not given") takes the config's own default."""

import dataclasses

import pytest

from bonedeploy.util.defaults import default, default_of, none_means_default


@none_means_default
@dataclasses.dataclass(frozen=True)
class Config:
    engine: str
    out: str | None = None  # None is a real value here: nothing to fill in
    delay_us: int = 500
    sizes: tuple[int, ...] = dataclasses.field(default_factory=lambda: (1, 8))


def test_none_by_keyword_or_position_takes_the_declared_default():
    assert Config("m", delay_us=None) == Config("m", None, None, None) == Config("m")
    assert Config("m").delay_us == 500 and Config("m", sizes=None).sizes == (1, 8)


def test_given_values_and_required_fields_are_left_alone():
    assert Config("m", "o", 0, ()) == Config(engine="m", out="o", delay_us=0, sizes=())
    assert Config(None).engine is None  # required: no default to fill in


def test_replace_goes_through_the_same_rule():
    assert dataclasses.replace(Config("m", delay_us=7), delay_us=None).delay_us == 500


def test_the_plain_dataclass_errors_stay():
    with pytest.raises(TypeError, match="twice"):
        Config("m", engine="n")
    with pytest.raises(TypeError, match="takes 4 fields"):
        Config("m", "o", 1, (), "extra")
    with pytest.raises(dataclasses.FrozenInstanceError):
        Config("m").delay_us = 1  # type: ignore[misc]


def test_default_and_default_of():
    assert default(None, 3) == 3 and default(0, 3) == 0
    assert default_of(Config, "delay_us") == 500 and default_of(Config, "sizes") == (1, 8)
    with pytest.raises(KeyError, match="Config.engine has no default"):
        default_of(Config, "engine")
