"""wsmooth_ext: Wasserstein smoothing (Levine & Feizi 2020) with a fused C++/CUDA flow-noise kernel.

The noise ops are imported eagerly; the heavier layers (certification, attacks, training, data) load on
first use, so ``import wsmooth_ext`` stays fast and does not pull in SciPy or matplotlib.
"""

from importlib import import_module

from .ops import divergence, divergence_adjoint, flow_noise, has_kernel, kernel_info, pixel_noise

__version__ = "0.1.0"

# public name -> submodule that defines it (imported on first attribute access)
_LAZY = {
    "Smooth": "smooth",
    "ABSTAIN": "smooth",
    "CertifyRecord": "smooth",
    "clopper_pearson_lower": "statistics",
    "binomial_test_pvalue": "statistics",
    "certified_radius": "certificates",
    "wasserstein_distance": "wasserstein",
    "WassersteinPGD": "attacks",
    "FrankWolfeAttack": "attacks",
    "DualProjectionPGD": "attacks",
    "FlowAttack": "attacks",
    "projected_sinkhorn": "attacks",
    "NOISES": "noises",
    "load_dataset": "data",
    "build_model": "models",
    "load_checkpoint": "checkpoint",
    "save_checkpoint": "checkpoint",
}

__all__ = ["flow_noise", "pixel_noise", "divergence", "divergence_adjoint", "has_kernel", "kernel_info", "__version__",
           *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        value = getattr(import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'wsmooth_ext' has no attribute {name!r}")
