"""wsmooth_ext: Wasserstein smoothing (Levine & Feizi 2020) with a fused C++/CUDA flow-noise kernel.

The package is layered (``docs/architecture.md``): ``core`` (noise ops, certificates, the smoothed
classifier), ``inputs`` (datasets, models, checkpoints), ``infra`` (option ranges, progress, torchrun),
then ``training``, ``attacks`` and ``runs``, then ``analysis`` and ``experiments``, and ``commands`` on top.

The noise ops are imported eagerly; the heavier layers (certification, attacks, training, data) load on
first use, so ``import wsmooth_ext`` stays fast and does not pull in SciPy or matplotlib.
"""

from importlib import import_module

from .core.ops import divergence, divergence_adjoint, flow_noise, has_kernel, kernel_info, pixel_noise

__version__ = "0.1.0"

# public name -> submodule that defines it (imported on first attribute access)
_LAZY = {
    "Smooth": "core.smooth",
    "ABSTAIN": "core.smooth",
    "CertifyRecord": "core.smooth",
    "clopper_pearson_lower": "core.statistics",
    "binomial_test_pvalue": "core.statistics",
    "certified_radius": "core.certificates",
    "wasserstein_distance": "core.wasserstein",
    "WassersteinPGD": "attacks",
    "FrankWolfeAttack": "attacks",
    "DualProjectionPGD": "attacks",
    "FlowAttack": "attacks",
    "SmoothedTarget": "attacks",
    "projected_sinkhorn": "attacks",
    "NOISES": "core.noises",
    "load_dataset": "inputs.data",
    "build_model": "inputs.models",
    "Ensemble": "inputs.models",
    "load_checkpoint": "inputs.checkpoint",
    "load_ensemble": "inputs.checkpoint",
    "save_checkpoint": "inputs.checkpoint",
    "retain_freed_memory": "infra.allocator",
}

__all__ = ["flow_noise", "pixel_noise", "divergence", "divergence_adjoint", "has_kernel", "kernel_info", "__version__",
           *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        value = getattr(import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'wsmooth_ext' has no attribute {name!r}")
