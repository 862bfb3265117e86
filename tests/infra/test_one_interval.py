"""infra.options.Option is the one option type and infra.ranges.Range its one interval: membership is compared with
the interval written out by hand on a grid that holds every bound, the values just beside it, the infinities, NaN
and bool; the words of the one refusal message are checked against the same bounds."""

import itertools
import math

import pytest

from wsmooth_ext.infra.options import Option
from wsmooth_ext.infra.ranges import Range
from wsmooth_ext.training.params import hyper, specs

GRID = [-math.inf, -2.0, -1, -1e-9, 0, 0.0, 1e-9, 0.5, 1, 1.0, 1.5, 2, 2.0, 3, 1e6, math.inf, math.nan]


def by_hand(value, low, high, low_open, high_open):
    if isinstance(value, bool) or not math.isfinite(value):
        return False
    above = low is None or (value > low if low_open else value >= low)
    below = high is None or (value < high if high_open else value <= high)
    return above and below


BOUNDS = list(itertools.product([None, -1.0, 0.0, 1.0], [None, 1.0, 2.0], [False, True], [False, True]))


def _range(low, high, low_open, high_open, integer=False):
    return Range(-math.inf if low is None else low, math.inf if high is None else high, integer=integer,
                 low_open=low_open, high_open=high_open)


@pytest.mark.parametrize("low, high, low_open, high_open", BOUNDS)
def test_option_membership_is_the_interval(low, high, low_open, high_open):
    option = Option("x", 0, "x", _range(low, high, low_open, high_open))
    for value in GRID:
        expected = by_hand(value, low, high, low_open, high_open)
        assert option.allows(value) == expected, (option, value)
        if expected:
            assert option.check(value) == float(value)
        else:
            with pytest.raises(ValueError, match=r"^--x must be "):
                option.check(value)


@pytest.mark.parametrize("low, high, low_open, high_open", BOUNDS)
def test_hyper_parameter_membership_is_the_interval(low, high, low_open, high_open):
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class P:
        h: float = hyper(0.0, "h", low=low, high=high, low_open=low_open, high_open=high_open)

    option = specs(P)["h"][1]
    assert option.name == "h"
    for value in GRID:
        assert option.allows(value) == by_hand(value, low, high, low_open, high_open), (option, value)


@pytest.mark.parametrize("low, high, low_open, high_open, words", [
    (1, None, False, False, "an integer >= 1"),
    (0, None, True, False, "an integer > 0"),
    (1, 1024, False, False, "an integer in [1, 1024]"),
    (0, 2 ** 63, False, True, "an integer in [0, 2**63)"),
    (3, 3, False, False, "3"),
])
def test_integer_words_state_the_bounds(low, high, low_open, high_open, words):
    option = Option("n", 1, "n", _range(low, high, low_open, high_open, integer=True))
    assert option.text() == words
    with pytest.raises(ValueError) as info:
        option.check(-5)
    assert str(info.value) == f"--n must be {words}, got -5"


@pytest.mark.parametrize("low, high, low_open, words", [
    (0.0, None, True, "a finite number > 0"),
    (0.0, None, False, "a finite number >= 0"),
    (None, 2.0, False, "a finite number <= 2"),
    (None, None, False, "a finite number"),
    (0.0, 1.0, True, "a number in (0, 1]"),
])
def test_number_words_state_the_bounds(low, high, low_open, words):
    option = Option("lr", 1.0, "lr", _range(low, high, low_open, False), units="mass-normalized units")
    assert option.text() == words
    with pytest.raises(ValueError) as info:
        option.check(math.nan, "lr", owner="method noise")
    assert str(info.value) == f"lr must be {words} (mass-normalized units) for method noise, got nan"


def test_integers_accept_whole_floats_and_refuse_bools_and_fractions():
    option = Option("n", 1, "n", Range(1, 10, integer=True))
    assert option.check(5.0) == 5 and isinstance(option.check(5.0), int)
    for bad in (True, 2.5, "3", None):
        with pytest.raises(ValueError):
            option.check(bad)
    assert Option("n", None, "n", Range(1, 10, integer=True), optional=True).check(None) is None


def test_choices_are_checked_and_stated():
    option = Option("optimizer", "sgd", "optimizer", choices=("sgd", "adam"))
    assert option.check("adam") == "adam"
    with pytest.raises(ValueError, match=r"^--optimizer must be one of sgd, adam, got 'rmsprop'$"):
        option.check("rmsprop")
