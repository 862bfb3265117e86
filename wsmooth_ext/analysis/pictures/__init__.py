"""Pictures of what is certified and what breaks it, as matplotlib Figures (for notebooks) and files (for the CLI).

* :func:`noise_grid`: clean images next to the smoothing samples the classifier votes on (``wsmooth show noise``);
* :func:`attack_figure` / :func:`attack_picture`: clean | adversarial | signed difference with the optimal
  transport plan as arrows (``wsmooth show attack``; the paper's Fig. 1 for any model); :func:`nearest_fooled`:
  the examples of smallest exact W1 that several attacks on one model found (``experiment fig5``);
* :func:`save_figure`: writes a Figure atomically, refusing an existing file unless told to overwrite.

Each figure states its colour scales; pixel values are never clipped silently.
"""

from .attack import AttackExample, attack_examples, attack_figure, attack_picture, load_attack_examples, nearest_fooled
from .noise import DEFAULT_NOISES, DEFAULT_SIGMAS, noise_grid, noise_samples
from .output import check_output, save_figure

__all__ = ["noise_grid", "noise_samples", "DEFAULT_NOISES", "DEFAULT_SIGMAS", "attack_figure", "attack_picture",
           "load_attack_examples", "attack_examples", "nearest_fooled", "AttackExample", "save_figure", "check_output"]
