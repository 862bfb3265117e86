"""SHA-256 of the weights that `wsmooth train` produces for every training method and adversarial attack.

A refactoring check, not a test: run it before and after a change of the training code on the same machine
and compare the two outputs line by line (float results differ between CPUs, so the hashes are not pinned
anywhere). Each case trains 2 epochs on 64 `digits` images with the command line, four ways:

* ``1p``        — one process, 2 epochs;
* ``1p-resume`` — one process, 1 epoch, then ``--epochs 2 --resume`` (must equal ``1p``);
* ``2p``        — torchrun, 2 CPU processes (gloo), 2 epochs;
* ``2p-resume`` — torchrun, 1 epoch, then ``--epochs 2 --resume`` (must equal ``2p``).

Every line: case, way, SHA-256 of the weights (state dict, keys sorted), and short SHA-256 prefixes of the
per-epoch history (without timings) and of the checkpoint's ``train_args`` (the resume identity).

    python benchmarks/training_hashes.py > hashes.txt        # all cases: ~17 min on 2 busy cores (36 torchruns)
    python benchmarks/training_hashes.py --cases noise flow      # some of them
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

BASE = ["train", "--dataset", "digits", "--arch", "wong_mnist", "--train-size", "64", "--batch", "16",
        "--optimizer", "adam", "--lr", "0.01", "--seed", "3", "--no-progress"]
NOISE = ["--noise", "flow-laplace", "--sigma", "0.05"]
CASES = {
    "noise": NOISE,
    "noise-m2-augment": NOISE + ["--num-noise", "2", "--augment"],
    # a schedule that extends (1 epoch, then --epochs 2 --resume): step with a warm-up
    "noise-step-warmup": NOISE + ["--lr-schedule", "step", "--lr-step", "1", "--lr-gamma", "0.5", "--lr-warmup",
                                  "0.5"],
    "clean-sgd": ["--noise", "none", "--optimizer", "sgd", "--lr", "0.05"],
    "consistency": NOISE + ["--method", "consistency", "--num-noise", "2"],
    "smoothadv": NOISE + ["--method", "smoothadv", "--adv-steps", "2", "--adv-warmup", "2",
                          "--adv-epsilon", "0.05"],
    "macer": NOISE + ["--method", "macer", "--num-noise", "4"],
    "macer-uniform": ["--noise", "flow-uniform", "--sigma", "0.05", "--method", "macer", "--num-noise", "3",
                      "--macer-gamma", "0.02"],
    "adv-sinkhorn": ["--adversarial", "sinkhorn", "--adv-attack-steps", "2", "--adv-eps-warmup", "2"],
    "adv-frank-wolfe": ["--adversarial", "frank-wolfe", "--adv-attack-steps", "2", "--adv-eps-warmup", "2"],
    "adv-flow": ["--adversarial", "flow", "--adv-attack-steps", "2", "--adv-eps-warmup", "3"],
    "adv-flow-clean": ["--adversarial", "flow", "--adv-attack-steps", "2", "--adv-eps-warmup", "0",
                       "--adv-clean-weight", "0.5"],
}
WAYS = ("1p", "1p-resume", "2p", "2p-resume")
ADDED = {"lr_schedule": "constant", "lr_warmup": 0.0, "lr_div": 25.0, "lr_step": 30, "lr_gamma": 0.1,
         "sigma_warmup": 0, "sigma_warmup_start": 0.1}  # train_args keys added later, at their defaults
_TEARDOWN_ABORT = "terminate called without an active exception"  # gloo at exit, see test_train_distributed


def _launch(args: list[str], processes: int) -> None:
    if processes == 1:  # in this process (one thread, as each torchrun process): no start-up time
        import contextlib
        import io

        from wsmooth_ext.cli import main

        with contextlib.redirect_stdout(io.StringIO()):
            if main(args) != 0:
                raise RuntimeError(f"wsmooth {' '.join(args)} failed")
        return
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
           "-m", "wsmooth_ext.cli", "--"] + args
    for attempt in range(2):
        result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        if result.returncode == 0:
            return
        if attempt or not (_TEARDOWN_ABORT in result.stderr and "final:" in result.stdout):
            break
        if "--resume" not in args:
            Path(args[args.index("--out") + 1]).unlink(missing_ok=True)
    raise RuntimeError(f"{' '.join(cmd)} failed:\n{result.stderr[-3000:]}")


def _digest(path: Path) -> tuple[str, str, str]:
    from wsmooth_ext.inputs.checkpoint import load_training_state

    state, meta, training = load_training_state(path)
    weights = hashlib.sha256()
    for key in sorted(state):
        weights.update(key.encode())
        weights.update(state[key].detach().cpu().contiguous().numpy().tobytes())
    history = [{k: v for k, v in row.items() if k != "seconds"} for row in training["history"]]
    short = lambda obj: hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:12]  # noqa: E731
    # train_args without world_size, and without the keys added since the hashes were first compared where they
    # hold their defaults (the learning-rate schedule and sigma warm-up: training/schedules.py), so that these
    # lines compare with those of earlier code
    args = {k: v for k, v in meta["train_args"].items() if k != "world_size" and ADDED.get(k, ()) != v}
    return weights.hexdigest(), short(history), short(args)


def run_case(name: str, way: str, folder: Path) -> str:
    processes = 2 if way.startswith("2p") else 1
    out = folder / f"{name}_{way}.pt"
    args = BASE + CASES[name] + ["--out", str(out)]
    if way.endswith("resume"):
        _launch(args + ["--epochs", "1"], processes)
        _launch(args + ["--epochs", "2", "--resume"], processes)
    else:
        _launch(args + ["--epochs", "2"], processes)
    weights, history, train_args = _digest(out)
    return f"{name:<17} {way:<10} {weights}  history {history}  train_args {train_args}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    parser.add_argument("--ways", nargs="+", choices=WAYS, default=list(WAYS))
    args = parser.parse_args()
    import warnings

    import torch

    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", "wsmooth_ext. no compiled flow_noise kernel")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.cases:
            for way in args.ways:
                print(run_case(name, way, Path(tmp)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
