"""infra.ranges.Range is the one interval type: training's Spec and the experiments' checks decide membership
with it. Each is compared with the interval written out by hand, on a grid that holds every bound, the values
just beside it, the infinities, NaN and bool."""

import itertools
import math

import pytest

from wsmooth_ext.experiments import _checks
from wsmooth_ext.training.params import Spec

GRID = [-math.inf, -2.0, -1, -1e-9, 0, 0.0, 1e-9, 0.5, 1, 1.0, 1.5, 2, 2.0, 3, 1e6, math.inf, math.nan]


def by_hand(value, low, high, low_open, high_open):
    if isinstance(value, bool) or not math.isfinite(value):
        return False
    above = low is None or (value > low if low_open else value >= low)
    below = high is None or (value < high if high_open else value <= high)
    return above and below


SPECS = list(itertools.product([None, -1.0, 0.0, 1.0], [None, 1.0, 2.0], [False, True], [False, True]))


@pytest.mark.parametrize("low, high, low_open, high_open", SPECS)
def test_spec_membership_is_the_interval(low, high, low_open, high_open):
    spec = Spec("h", low=low, high=high, low_open=low_open, high_open=high_open)
    for value in GRID:
        assert spec.contains(value) == by_hand(value, low, high, low_open, high_open), (spec, value)


@pytest.mark.parametrize("positive, at_least, below",
                         list(itertools.product([True, False], [None, -1.0, 1.0], [None, 2.0])))
def test_experiment_number_check_is_the_interval(positive, at_least, below):
    low = at_least if at_least is not None else 0.0
    low_open = at_least is None and positive
    for value in GRID + [True]:
        expected = by_hand(value, low, below, low_open, True)
        try:
            _checks.number("x", value, positive=positive, at_least=at_least, below=below)
            accepted = True
        except ValueError as exc:
            accepted = False
            assert str(exc).startswith("--x must be a finite number ")
        assert accepted == expected, (value, positive, at_least, below)


@pytest.mark.parametrize("low", [0, 1, 5])
def test_experiment_integer_check_is_the_interval(low):
    for value in [-1, 0, 1, 4, 5, 6, 10 ** 9, 1.0, 5.0, True, None, "3"]:
        expected = isinstance(value, int) and not isinstance(value, bool) and value >= low
        try:
            _checks.integer("n", value, low)
            accepted = True
        except ValueError as exc:
            accepted = False
            assert str(exc) == f"--n must be an integer >= {low}, got {value!r}"
        assert accepted == expected, (value, low)
