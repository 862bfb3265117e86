"""The distribution table (core/distributions.py) and its C++ twin (csrc/distributions.h): the same codes, λ(σ) and
unit bounds; the op draws, for each code, the distribution of that name; and the modules that used to switch on
the name now read the table."""

import ast
import math
from pathlib import Path

import pytest
import torch

from wsmooth_ext.core import distributions, noises, ops, reference
from wsmooth_ext.core.distributions import DISTRIBUTIONS

ROOT = Path(__file__).resolve().parents[2]
compiled = pytest.mark.skipif(not ops.has_kernel("cpu"), reason="compiled CPU kernel not built")
SIGMAS = [1e-6, 0.005, 0.01, 0.07, 0.1, 0.3, 1.0, 1 / 3, 3.0, 7.77, 1e4]


@compiled
def test_the_compiled_table_is_this_table():
    theirs = ops._C.distributions()
    ours = [dict(name=d.name, code=d.code, lambda_mul=d.lambda_mul, lambda_div=d.lambda_div,
                 unit_bound=d.unit_bound) for d in DISTRIBUTIONS.values()]
    assert theirs == ours  # floats compared exactly


def test_codes_are_positions_and_formulas_are_the_documented_ones():
    assert [d.code for d in DISTRIBUTIONS.values()] == list(range(len(DISTRIBUTIONS)))
    laplace, uniform = DISTRIBUTIONS["laplace"], DISTRIBUTIONS["uniform"]
    for sigma in SIGMAS:  # bit for bit the forms the package always used
        assert laplace.scale(sigma) == sigma / math.sqrt(2.0)
        assert uniform.scale(sigma) == sigma * math.sqrt(3.0)
    assert laplace.unit_bound == 31 * math.log(2) and uniform.unit_bound == 1.0
    assert laplace.certificate_names == ("tight", "paper") and uniform.certificate_names == ("uniform",)
    assert distributions.certificate_names()[:3] == ("tight", "paper", "uniform")  # a new one comes after


def test_unit_draws_stay_within_the_bound():
    words = torch.tensor([0, 1, 2 ** 31 - 1, 2 ** 31, 2 ** 31 + 1, 2 ** 32 - 1, 12345, 3 * 2 ** 30], dtype=torch.int64)
    for d in DISTRIBUTIONS.values():
        for dtype in (torch.float32, torch.float64):
            unit = d.words_to_noise(words, 1.0, dtype)
            slack = 1e-5 if dtype == torch.float32 else 0.0  # float32's log rounds to within an ulp of 31·ln 2
            assert bool(torch.isfinite(unit).all()) and float(unit.abs().max()) <= d.unit_bound + slack
    # the extremes reach it: Laplace's m = 0 gives −ln 2^-31 exactly 31·ln 2 (float64)
    assert float(DISTRIBUTIONS["laplace"].words_to_noise(torch.tensor([0]), 1.0, torch.float64).abs()) == pytest.approx(
        31 * math.log(2), rel=1e-15)


@compiled
@pytest.mark.parametrize("name", list(DISTRIBUTIONS))
@pytest.mark.parametrize("op,impl", [(ops.flow_noise, reference.flow_noise_reference),
                                     (ops.pixel_noise, reference.pixel_noise_reference)])
def test_each_code_draws_the_distribution_of_its_name(name, op, impl):
    x = torch.rand(2, 2, 5, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    kwargs = dict(seed=3, sample_offset=7, keys=torch.tensor([4, 9]))
    out = op(x, 3, 0.1, noise=name, **kwargs)
    torch.testing.assert_close(out, impl(x, 3, 0.1, noise=name, **kwargs), rtol=1e-12, atol=1e-12)
    others = [n for n in DISTRIBUTIONS if n != name]
    assert all(not torch.allclose(out, op(x, 3, 0.1, noise=n, **kwargs)) for n in others)


@compiled
def test_the_op_scales_uniform_draws_by_this_lambda_exactly():
    # uniform pixel noise on zeros in pixel units is λ·unit, with the same two roundings in C++ and here
    x = torch.zeros(1, 1, 4, 16, dtype=torch.float64)
    d = DISTRIBUTIONS["uniform"]
    for sigma in SIGMAS[:-1]:
        words = reference.random_words(5, torch.tensor([0]), 0, 1, 64)[0, 0]
        expected = d.words_to_noise(words, d.scale(sigma), torch.float64).view(1, 1, 4, 16)
        assert torch.equal(ops.pixel_noise(x, 1, sigma, noise="uniform", seed=5, normalize=False), expected)


def test_families_take_their_distribution_from_the_table():
    for family in noises.FAMILIES.values():
        d = distributions.get(family.distribution)
        assert set(family.certificates) <= set(d.certificate_names)
        assert family.scale(0.3) == d.scale(0.3)
    with pytest.raises(ValueError, match="certificates must be some of"):
        noises.NoiseFamily("bad", "flow", "uniform", ("tight",), {"l1": 1.0, "l2": 1.0}, "")
    with pytest.raises(ValueError, match="noise must be one of"):
        noises.NoiseFamily("bad", "flow", "gaussian", ("tight",), {"l1": 1.0, "l2": 1.0}, "")


def test_unknown_names_are_refused_with_the_valid_ones():
    with pytest.raises(ValueError, match=r"noise must be one of \['laplace', 'uniform'\], got 'gaussian'"):
        distributions.get("gaussian")
    with pytest.raises(ValueError, match="noise must be one of"):
        reference.noise_scale("gaussian", 0.1)


# ------------------------------------------------------------------------------------------ no second copy
READERS = ["wsmooth_ext/core/reference.py", "wsmooth_ext/core/ops.py", "wsmooth_ext/core/certificates.py",
           "wsmooth_ext/training/macer.py", "wsmooth_ext/core/noises.py"]


@pytest.mark.parametrize("path", READERS)
def test_readers_of_the_table_compare_no_distribution_name(path):
    """No `noise == "laplace"` (or `in ("laplace", ...)`, or a certificate's name) in the modules that read the
    table: a comparison with a name is a second copy of the table."""
    names = set(DISTRIBUTIONS) | set(distributions.certificate_names())
    found = []
    for node in ast.walk(ast.parse((ROOT / path).read_text())):
        if isinstance(node, ast.Compare):
            for operand in [node.left, *node.comparators]:
                for sub in ast.walk(operand):
                    if isinstance(sub, ast.Constant) and sub.value in names:
                        found.append(f"line {node.lineno}: {sub.value!r}")
    assert found == []


def test_the_kernels_switch_on_distributions_in_one_place():
    """Outside csrc/distributions.h, no C++ source compares a noise code with a distribution's code."""
    for path in sorted((ROOT / "csrc").rglob("*")):
        if path.suffix not in (".h", ".cpp", ".cu", ".cuh") or path.name == "distributions.h":
            continue
        text = path.read_text()
        assert "::kCode" not in text and "kLaplace" not in text and "kUniform" not in text, path
