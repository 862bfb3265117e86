"""`wsmooth experiment fig5`: the paper's Fig. 5 — standard, adversarially trained and smoothed models under
Wasserstein attack."""

from __future__ import annotations

from ._cli import command

HELP = ("the paper's Fig. 5: train (or take) a standard, an adversarially trained and a Wasserstein-smoothed "
        "wong_mnist, attack held-out digits with each method, tabulate and plot accuracy under attack vs "
        "nominal eps and vs exact W1 (resumable; --quick for a miniature)")

EPILOG = """\
Models (each trained exactly as `wsmooth train` would, or given as a checkpoint with --standard/--adversarial/
--smoothed): standard = plain training; adversarial = Wasserstein adversarial training of the plain model
(default flow-space PGD, --adv-training flow, the one that is practical on a CPU; sinkhorn is Wong et al.'s own
and ~30x costlier per step); smoothed = flow-laplace noise training at --sigma, attacked as the smoothed
classifier (gradients of the soft smoothed classifier over --n-grad fresh samples; success when the hard
smoothed prediction over --n-test samples, binomial test at --alpha, is wrong or abstains, as the paper).

Every model is attacked with every --methods attack on the first --max-images held-out digits in the paper's
growing-eps mode (eps from --eps0, x--eps-factor every --eps-every iterations for the digits still standing,
--max-iter iterations; radius = eps at the first flip), the attacks' own parameters at `wsmooth attack`'s
defaults. Accuracy under attack at r: % of the digits correct before the attack and not broken within r; a
digit is broken at W1 <= r when the example that fooled it has exact W1 <= r (L2 ground metric, linear
program, mass-normalized), at nominal eps <= r when its radius is <= r; wrong before the attack = broken at
0. Nominal eps is in each attack's own units (sinkhorn: entropic-ball radius; frank-wolfe, pgd-dual: W1
bound; flow: flow-plan L1 norm): compare attacks on the W1 columns.

Writes into --out DIR:
  standard.pt adversarial.pt smoothed.pt   checkpoints of the models trained here
  MODEL_METHOD.tsv                         attack logs, as `wsmooth attack` writes them (`wsmooth analyze`)
  adversarial/MODEL_METHOD.pt              their adversarial examples, as `wsmooth attack --save-adv` saves
                                           them (`wsmooth show attack LOG --adv FILE` draws any of them)
  summary.md                               the models; accuracy under attack at --grid vs nominal eps and vs
                                           exact W1, medians, seconds per digit; the command line
  fig5.png                                 the curves: one row per attack, vs nominal eps | vs exact W1
  examples_MODEL.png                       the model's 4 fooled digits of smallest exact W1 over its attacks:
                                           clean | adversarial | difference with the optimal transport plan
                                           (none for a model no attack fooled: summary.md says so)
  experiment.json                          the settings DIR was started with

Sizes. The defaults are paper-like: 20 epochs, 100 digits, the paper's MNIST attack schedule (eps0 0.3, x1.1
every 10, 200 iterations) and smoothed-attack samples (n_grad 128, n_test 10,000). On a 2-core CPU that takes
hours, almost all of it the smoothed model: about 0.3 s per digit and iteration at n_test 10,000 while the digit
stands, so an estimated 2-4 h for 100 digits and two attacks (scaled from --quick's measured costs, not run);
a GPU is advised. --quick is a miniature (6 epochs, 20 digits, eps0 0.1 x1.5 every 5, 30 iterations, n_grad 16,
n_test 1000): measured 3 min 46 s wall (124 s CPU) on the shared 2-core development CPU with
OMP_NUM_THREADS=1, about 5 minutes to allow for load. Options given with --quick override its values.

An existing non-empty DIR is refused unless --resume: then the settings (and given checkpoints) must equal
those in experiment.json (--grid, --device, --attack-batch, --jobs and --no-progress may change); unfinished
checkpoints and logs are continued and finished ones only re-read.

example:  OMP_NUM_THREADS=1 wsmooth experiment fig5 --quick --out fig5_quick
          wsmooth experiment fig5 --smoothed my_sigma0.01.pt --methods sinkhorn,frank-wolfe,flow --out fig5
"""


add_arguments, run = command("fig5", EPILOG)
