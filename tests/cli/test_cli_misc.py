"""Small CLI commands: bench, the top-level --help."""

import pytest

from wsmooth_ext.cli import main


def test_bench_reports_both_timings(capsys):
    assert main(["bench", "--shape", "2,1,6,7", "--samples", "50", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "fused op" in out and "reference" in out and "speed-up" in out


def test_bench_names_the_cpu_path_in_use(capsys, monkeypatch):
    import wsmooth_ext

    if not wsmooth_ext.has_kernel("cpu"):
        pytest.skip("compiled CPU kernel not built")
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "default")
    assert main(["bench", "--shape", "1,1,4,5", "--samples", "20", "--threads", "1"]) == 0
    assert "CPU path   default" in capsys.readouterr().out


@pytest.mark.parametrize("args,match", [(["--shape", "1,2"], "--shape"), (["--samples", "0"], "--samples"),
                                        (["--threads", "0"], "--threads")])
def test_bench_bad_arguments_one_line(capsys, args, match):
    assert main(["bench"] + args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and match in err[0]


def test_help_lists_every_command_and_units(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for command in ("demo", "train", "certify", "predict", "attack", "analyze", "bench"):
        assert command in out
    assert "mass-normalized" in out
