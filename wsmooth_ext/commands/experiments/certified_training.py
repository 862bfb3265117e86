"""`wsmooth experiment certified-training`: the training methods compared by certified radius (issue 12)."""

from __future__ import annotations

from ._cli import command

HELP = ("train wong_mnist with each training method at each sigma, certify held-out digits, and write a "
        "Markdown table and certified-accuracy curves (resumable; --quick for a miniature)")

EPILOG = """\
For each method (--methods) and sigma (--sigmas): trains wong_mnist on the training images of --dataset
exactly as `wsmooth train --method METHOD` would (the method's own hyper-parameters at their defaults, see
`wsmooth train -h`), then certifies the first --max-images held-out images exactly as `wsmooth certify` would.
Writes into --out DIR:
  METHOD_sigmaS.pt          checkpoint (per-epoch history; training time = sum of its epochs' seconds)
  METHOD_sigmaS.tsv         certify log (Cohen's columns first)
  summary.md                one row per run: smoothed accuracy, abstain %, median certified W1, ACR,
                            certified accuracy at --radii, training and certification time in seconds
  certified_accuracy.png    certified accuracy vs radius, one curve per run
  experiment.json           the settings DIR was started with
The defaults are the full comparison of issue 12 (8 runs; tens of minutes on a 2-core CPU, a few on a GPU).
--quick is a miniature (4 epochs, 100 held-out digits, n0 100, n 1000: about two minutes on a 2-core CPU);
options given with --quick override its values.

An existing non-empty DIR is refused unless --resume: then the settings must equal those in experiment.json
(--radii, --device, --certify-batch and --no-progress may change), unfinished checkpoints and logs are
continued (the result equals an uninterrupted run) and finished ones only re-read. On a shared CPU set
OMP_NUM_THREADS=1 (small training batches gain little from more threads).

example:  OMP_NUM_THREADS=1 wsmooth experiment certified-training --out wsmooth_out/certified_training
          wsmooth experiment certified-training --quick --methods noise,consistency --out quick
"""


add_arguments, run = command("certified_training", EPILOG)
