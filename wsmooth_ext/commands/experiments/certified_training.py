"""`wsmooth experiment certified-training`: the training methods compared by certified radius."""

from __future__ import annotations

from ._cli import command

HELP = ("train a base model (--arch, default wong_mnist) with each training method at each sigma, certify "
        "held-out digits, and write a Markdown table and certified-accuracy curves (resumable; --quick for a "
        "miniature)")

EPILOG = """\
For each method (--methods) and sigma (--sigmas): trains --arch (default wong_mnist) on the training images of
--dataset exactly as `wsmooth train --arch ARCH --method METHOD` would, then certifies the first --max-images
held-out images (every --skip-th: --skip 20 --max-images 500 are the official test digits 0, 20, ..., 9980)
exactly as `wsmooth certify` would. The methods' own hyper-parameters are those of
`wsmooth train -h` (same names, ranges and defaults): each given value applies to every method of --methods that
has it (--num-noise 4: four noisy copies for each method), is checked against each such method's range, and is
refused when no method of --methods has it. --dataset mnist trains on the official 60,000 training digits and
certifies the official test digits (files in --data-dir, or $WSMOOTH_DATA). Writes into --out DIR:
  METHOD_sigmaS.pt          checkpoint (per-epoch history; training time = sum of its epochs' seconds)
  METHOD_sigmaS.tsv         certify log (Cohen's columns first)
  summary.md                one row per run: smoothed accuracy, abstain %, median certified W1, ACR,
                            certified accuracy at --radii, training and certification time in seconds
  certified_accuracy.png    certified accuracy vs radius, one curve per run
  experiment.json           the settings DIR was started with
The defaults are the full comparison: every method at both sigmas (8 runs; tens of minutes on a 2-core CPU, a few on a GPU).
--quick is a miniature (4 epochs, 100 held-out digits, n0 100, n 1000: about two minutes on a 2-core CPU);
options given with --quick override its values.

An existing non-empty DIR is refused unless --resume: then the settings (--arch and the method options
included) must equal those in experiment.json
(--radii, --device, --certify-batch, --jobs and --no-progress may change), unfinished checkpoints and logs are
continued (the result equals an uninterrupted run) and finished ones only re-read. On a shared CPU set
OMP_NUM_THREADS=1 (small training batches gain little from more threads).

example:  OMP_NUM_THREADS=1 wsmooth experiment certified-training --out wsmooth_out/certified_training
          wsmooth experiment certified-training --quick --methods noise,consistency --out quick
          wsmooth experiment certified-training --dataset mnist --data-dir DATA --arch mnist_cnn4 \
              --methods noise,consistency --sigmas 0.01 --num-noise 4 --epochs 10 --skip 20 --out cnn4_mnist
"""


add_arguments, run = command("certified_training", EPILOG)
