import subprocess
import sys

from kerasdet import __version__
from kerasdet.cli import main


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == __version__


def test_no_command_prints_help_and_fails(capsys):
    assert main([]) == 2
    assert "demo" in capsys.readouterr().out


def test_bad_argument_is_one_line_without_traceback():
    result = subprocess.run(
        [sys.executable, "-m", "kerasdet.cli", "demo", "--layers", "--image-size", "x", "y"],
        capture_output=True, text=True,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "invalid int value" in result.stderr


def test_too_small_demo_image_is_a_one_line_error(capsys):
    assert main(["demo", "--layers", "--image-size", "16", "16"]) == 2
    err = capsys.readouterr().err
    assert "image size must be two ints (H W) >= 64, got (16, 16)" in err


def test_layers_options_need_layers(capsys):
    # Silently ignoring --image-size would run the 30-second detector demo on the wrong ask.
    assert main(["demo", "--image-size", "128", "128"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "--image-size belong to the foundation-layers demo: add --layers" in err


def test_detector_options_are_not_for_layers(capsys):
    assert main(["demo", "--layers", "--images", "4", "--seed", "1"]) == 2
    err = capsys.readouterr().err
    assert "--images and --seed belong to the detector demo: drop --layers" in err


def test_demo_image_count_must_be_positive():
    result = subprocess.run(
        [sys.executable, "-m", "kerasdet.cli", "demo", "--images", "0"], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "expected a positive integer, got '0'" in result.stderr
