"""wsmooth_ext: Wasserstein smoothing (Levine & Feizi 2020) with a fused C++/CUDA flow-noise kernel.

The package is layered (``docs/architecture.md``): ``core`` (noise ops, certificates, the smoothed
classifier), ``inputs`` (datasets, models, checkpoints), ``infra`` (option ranges, progress, torchrun),
then ``training``, ``attacks`` and ``runs``, then ``analysis`` and ``experiments``, and ``commands`` on top.

The noise ops are imported eagerly; the heavier layers (certification, attacks, training, data) load on
first use, so ``import wsmooth_ext`` stays fast and does not pull in SciPy or matplotlib.
"""

import importlib.abc
import importlib.util
import sys
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


# Modules that lived at the top level before the layer packages: ``import wsmooth_ext.noises`` (and
# ``from wsmooth_ext.train import train``) keep working and give the very module object of the new place, so
# user code, notebooks and monkeypatching written against the old paths see one module, not a copy.
MOVED_MODULES = {
    "noises": "core.noises", "ops": "core.ops", "reference": "core.reference", "flows": "core.flows",
    "wasserstein": "core.wasserstein", "statistics": "core.statistics", "certificates": "core.certificates",
    "smooth": "core.smooth", "inference": "core.inference",
    "data": "inputs.data", "models": "inputs.models", "checkpoint": "inputs.checkpoint",
    "train": "training.keywords", "methods": "training.compat_methods",
    "adversarial": "training.compat_adversarial",
    "distributed": "infra.distributed", "progress": "infra.progress", "ranges": "infra.ranges",
}


class _MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Resolves ``wsmooth_ext.<old name>`` to the module at its layer package (``MOVED_MODULES``)."""

    def find_spec(self, fullname, path=None, target=None):
        package, _, old = fullname.partition(".")
        if package != __name__ or old not in MOVED_MODULES:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        module = import_module(f"{__name__}.{MOVED_MODULES[spec.name.partition('.')[2]]}")
        # the import system stamps the alias spec on the module next; the alias spec carries the real one
        # (loader_state: per import, so concurrent imports of two old names cannot mix them) for exec_module
        spec.loader_state = module.__spec__
        return module

    def exec_module(self, module):
        module.__spec__ = module.__spec__.loader_state


if not any(isinstance(finder, _MovedModuleFinder) for finder in sys.meta_path):
    sys.meta_path.insert(0, _MovedModuleFinder())  # before editable-install finders that know the old files
