"""The schedule and data CLIs: one error line and exit code 2 for ordinary mistakes, checked
before any work, and no abbreviated flag taken for another."""

import pytest

from tune_eegpt import schedule as schedule_cli
from tune_eegpt.data import __main__ as data_cli


@pytest.mark.parametrize(
    "main, argv, message",
    [
        (schedule_cli.main, ["--batches-per-epoch", "10", "--max", "1e-3"], "arguments: --max"),
        (schedule_cli.main, ["--batches", "10"], "required: --batches-per-epoch"),
        (data_cli.main, ["prepare", "--data", "x", "--out", "y"], "required: --data-root"),
        (data_cli.main, ["synth", "--out", "x", "--subj", "8"], "arguments: --subj"),
    ],
)
def test_abbreviated_flags_are_refused(main, argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_schedule_names_an_output_it_cannot_write_before_any_work(tmp_path, capsys):
    args = ["--batches-per-epoch", "10"]
    assert schedule_cli.main([*args, "--csv", str(tmp_path)]) == 2
    captured = capsys.readouterr()
    assert captured.err == f"error: --csv {tmp_path} is a folder: give a file name\n"
    assert captured.out == ""  # nothing printed, nothing computed
    assert schedule_cli.main([*args, "--plot", str(tmp_path / "lr.txt")]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith(f"error: --plot {tmp_path / 'lr.txt'}: unknown image type ")
    assert "png" in captured.err and captured.err.count("\n") == 1 and captured.out == ""


def test_schedule_refuses_a_batch_count_below_one(capsys):
    assert schedule_cli.main(["--batches-per-epoch", "-3"]) == 2
    assert capsys.readouterr().err == (
        "error: --batches-per-epoch=-3 is not allowed: expected an integer >= 1\n"
    )


@pytest.mark.parametrize(
    "argv, meant",
    [
        (["prepar", "--out", "x"], "did you mean prepare?"),
        (["info", "x", "--verfy"], "did you mean --verify?"),
    ],
)
def test_a_misspelled_flag_or_command_gets_one_line_with_the_one_meant(argv, meant, capsys):
    with pytest.raises(SystemExit) as info:
        data_cli.main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "usage:" not in err  # not argparse's whole usage
    assert meant in err and err.rstrip().endswith("--help)")


def test_search_suggests_the_flag_meant(capsys):
    from tune_eegpt import search

    with pytest.raises(SystemExit):
        search.main(["--num-sample", "3"])
    err = capsys.readouterr().err
    assert "unrecognized arguments: --num-sample 3; did you mean --num-samples?" in err
    assert err.count("\n") == 1
