"""`wsmooth experiment table1`: the paper's Table 1 on the MNIST test set, beside the published values."""

from __future__ import annotations

from ._cli import command

HELP = ("the paper's Table 1: predict and certify the MNIST test set with flow-laplace (Wasserstein) and "
        "pixel-laplace (Laplace) smoothing at every sigma, from the authors' checkpoints or models trained here, "
        "beside the published values (resumable; --quick for a miniature)")

EPILOG = """\
Rows: each --noises x --sigmas (default the paper's grid). Models: with --checkpoints DIR, the file
DIR/PATTERN ({noise} and {sigma} filled in; the default pattern matches the authors' folder, e.g.
flow-laplace_sigma0.01.pth), rows without a file skipped; without it, every model trained here with the
training options (default 20 epochs of adam; the paper trained with SGD for 200 epochs).

On the test images chosen by --skip and --max-images, the paper's protocol: predict with n = --n-predict
(10,000), certify with n0 = --n0 (1,000), n = --samples (10,000), alpha = --alpha (0.05) and the paper's
certificate; the tight certificate and the base classifier's accuracy under noise come from the same samples.
Writes into --out DIR:
  NOISE_sigmaS_predict.tsv, NOISE_sigmaS_certify.tsv   the logs (as `wsmooth predict` / `wsmooth certify`)
  NOISE_sigmaS.pt                                     models trained here
  summary.md                 the two halves of Table 1, each cell beside the paper's value and the difference,
                             95% intervals, tight-certificate medians, seconds per image; the command line
  certified_accuracy_NOISE.png  certified accuracy vs radius, one curve per sigma
  noise_samples.png          the first test images (as many as fit 8 rows, 1 to 3) under every noise at every
                             sigma: samples 0-3 of their votes, drawn as certify and predict draw them
  experiment.json            the settings and the hashes of the checkpoints read

--data-dir (default $WSMOOTH_DATA) holds MNIST in torchvision's layout (MNIST/raw/t10k-images-idx3-ubyte[.gz]
...). Cost: about 21,000 noisy forward passes per image and row.

example:  wsmooth experiment table1 --checkpoints ../shared/checkpoints/levine_feizi_2020 --data-dir ../shared/data \\
              --sigmas 0.01 --skip 20 --max-images 500 --out table1_sigma0.01
"""

add_arguments, run = command("table1", EPILOG)
