"""Scale-out: torchrun with 2 CPU processes (gloo) gives the single-process logs, row for row."""

import os
import subprocess
import sys

import pytest
import torch

from wsmooth_ext.runs.logfile import read_log
from wsmooth_ext.inputs.checkpoint import save_checkpoint
from wsmooth_ext.cli import main
from wsmooth_ext.infra.distributed import DistContext, all_part_paths, part_path, shard
from wsmooth_ext.runs.logfile import merge_part_logs
from wsmooth_ext.inputs.models import build_model

FAST = ["--batch", "256", "--no-progress", "--dataset", "digits", "--skip", "7", "--max", "9"]


def _checkpoint(path):
    model = build_model("wong_mnist", input_shape=(1, 8, 8), num_classes=10, seed=0)
    save_checkpoint(path, model, {"arch": "wong_mnist", "dataset": "digits", "noise": "flow-laplace", "sigma": 0.05})
    return str(path)


def _torchrun(args, nproc=2):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "wsmooth_ext.cli", "--"] + args  # "--": torchrun would take --max/--n as its own
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def _without_time(rows):
    return [{k: v for k, v in r.items() if k != "time"} for r in rows]


def test_shard_and_part_paths():
    indices = list(range(0, 20, 3))
    ctxs = [DistContext(rank, 3) for rank in range(3)]
    shards = [shard(indices, c) for c in ctxs]
    assert sorted(sum(shards, [])) == indices and shards[0] == [0, 9, 18]
    assert part_path("out/log.tsv", ctxs[1]).as_posix() == "out/log.part-1-of-3.tsv"
    assert [p.name for p in all_part_paths("log.tsv", 2)] == ["log.part-0-of-2.tsv", "log.part-1-of-2.tsv"]


def test_merge_orders_rows_and_refuses_gaps(tmp_path):
    header = "idx\tlabel\tpredict\n"
    parts = [tmp_path / "a.tsv", tmp_path / "b.tsv"]
    parts[0].write_text(header + "4\t1\t1\n0\t2\t2\n")
    parts[1].write_text(header + "2\t0\t0\n6\t1\t")  # a half-written last row: image 6 is not done
    out = tmp_path / "out.tsv"
    with pytest.raises(ValueError, match="no row"):
        merge_part_logs(out, parts, [0, 2, 4, 6])
    assert not out.exists()
    assert merge_part_logs(out, parts, [0, 2, 4]) == 3
    assert out.read_text() == header + "0\t2\t2\n2\t0\t0\n4\t1\t1\n"
    parts[1].write_text(header + "0\t2\t2\n")
    with pytest.raises(ValueError, match="more than one"):
        merge_part_logs(out, parts, [0, 4])


@pytest.mark.parametrize("command,extra", [("certify", ["--n0", "16", "--n", "64"]), ("predict", ["--n", "64"])])
def test_torchrun_two_processes_equal_single_process(tmp_path, command, extra):
    ckpt = _checkpoint(tmp_path / "model.pt")
    single, merged = tmp_path / "single.tsv", tmp_path / "merged.tsv"
    assert main([command, ckpt, "--out", str(single)] + FAST + extra) == 0
    result = _torchrun([command, ckpt, "--out", str(merged)] + FAST + extra)
    assert result.returncode == 0, result.stderr[-2000:]
    cols_single, rows_single = read_log(single)
    cols_merged, rows_merged = read_log(merged)
    assert cols_merged == cols_single
    assert _without_time(rows_merged) == _without_time(rows_single)
    assert len(rows_single) == 9
    # each rank logged its own shard, and only rank 0 printed the summary
    assert len(read_log(tmp_path / "merged.part-1-of-2.tsv")[1]) == 4
    assert result.stdout.count(f"{'certified' if command == 'certify' else 'predicted'} 9 images") == 1


def test_torchrun_ensemble_equals_single_process(tmp_path):
    # several checkpoints: every rank smooths the same ensemble, and the merged log records both hashes
    first = _checkpoint(tmp_path / "a.pt")
    save_checkpoint(tmp_path / "b.pt", build_model("mnist_cnn4", input_shape=(1, 8, 8), seed=1),
                    {"dataset": "digits", "noise": "flow-laplace", "sigma": 0.05})
    args = ["certify", first, str(tmp_path / "b.pt"), "--n0", "16", "--n", "64"] + FAST
    single, merged = tmp_path / "single.tsv", tmp_path / "merged.tsv"
    assert main(args + ["--out", str(single)]) == 0
    result = _torchrun(args + ["--out", str(merged)])
    assert result.returncode == 0, result.stderr[-2000:]
    rows = read_log(merged)[1]
    assert _without_time(rows) == _without_time(read_log(single)[1]) and len(rows) == 9
    assert rows[0]["model_sha256"].count("+") == 1


def test_torchrun_resume_continues_each_rank(tmp_path):
    ckpt = _checkpoint(tmp_path / "model.pt")
    out = tmp_path / "log.tsv"
    args = ["certify", ckpt, "--n0", "16", "--n", "64", "--out", str(out)] + FAST
    assert _torchrun(args).returncode == 0
    full = read_log(out)[1]
    # interrupt: drop the last row of rank 1's part (and half-write it), remove the merged log
    part = tmp_path / "log.part-1-of-2.tsv"
    lines = part.read_text().splitlines(keepends=True)
    part.write_text("".join(lines[:-1]) + lines[-1][:5])
    out.unlink()
    refused = _torchrun(args)
    assert refused.returncode != 0 and "--resume" in refused.stderr
    resumed = _torchrun(args + ["--resume"])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert _without_time(read_log(out)[1]) == _without_time(full)


def test_torchrun_attack_equals_single_process(tmp_path):
    ckpt = _checkpoint(tmp_path / "model.pt")
    args = ["attack", ckpt, "--dataset", "digits", "--skip", "11", "--max", "6", "--max-iter", "6",
            "--eps0", "0.05", "--eps-every", "2", "--eps-factor", "1.5", "--no-progress"]
    single, merged = tmp_path / "single.tsv", tmp_path / "merged.tsv"
    assert main(args + ["--out", str(single), "--save-adv", str(tmp_path / "single.pt")]) == 0
    result = _torchrun(args + ["--out", str(merged), "--save-adv", str(tmp_path / "merged.pt")])
    assert result.returncode == 0, result.stderr[-2000:]
    assert _without_time(read_log(merged)[1]) == _without_time(read_log(single)[1])
    a, b = torch.load(tmp_path / "single.pt"), torch.load(tmp_path / "merged.pt")
    assert torch.equal(a["idx"], b["idx"]) and torch.equal(a["clean"], b["clean"])
    torch.testing.assert_close(a["adv"], b["adv"])
