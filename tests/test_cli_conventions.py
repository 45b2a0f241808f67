"""The command line's conventions: --version, -h, flags, usage lines, plurals, ``list``.

Help is also read through a pseudo-terminal of a set width, as a user sees it.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest
import tomllib
from typer.testing import CliRunner

from lsr1bench.cli import app

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
COMMANDS = ("validate", "run", "report", "compare", "list")
ONE_RUN = "batch_sizes: [10]\ngrids: [{models: [mlp], datasets: [mnist-embedded], optimizers: [adam]}]\n"


def in_terminal(args: list[str], columns: int) -> str:
    """Run ``python -m lsr1bench ARGS`` on a pseudo-terminal COLUMNS wide; its screen text."""
    main, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "NO_COLOR", "TERM")}
    env["TERM"] = "xterm-256color"
    proc = subprocess.Popen(
        [sys.executable, "-m", "lsr1bench", *args], stdin=child, stdout=child, stderr=child, cwd=ROOT, env=env
    )
    os.close(child)
    chunks = []
    while True:
        try:
            data = os.read(main, 65536)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=60)
    os.close(main)
    return ANSI.sub("", b"".join(chunks).decode("utf-8", "replace")).replace("\r\n", "\n")


def test_version_is_the_package_version() -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"lsr1bench {version} (python {sys.version_info[0]}.{sys.version_info[1]}")
    assert "torch " in result.output


@pytest.mark.parametrize("command", [[], *[[c] for c in COMMANDS]])
def test_dash_h_is_help(command: list[str]) -> None:
    short = runner.invoke(app, [*command, "-h"])
    long = runner.invoke(app, [*command, "--help"])
    assert short.exit_code == long.exit_code == 0, short.output
    assert short.output == long.output
    assert "Usage: " in short.output


@pytest.mark.parametrize(
    "command, usage",
    [
        ([], "Usage: lsr1bench [OPTIONS] COMMAND [ARGS]..."),
        (["run"], "Usage: lsr1bench run [OPTIONS] SUITE"),
        (["validate"], "Usage: lsr1bench validate [OPTIONS] SUITE"),
        (["compare"], "Usage: lsr1bench compare [OPTIONS] BASE CURRENT"),
        (["report"], "Usage: lsr1bench report [OPTIONS] RESULTS_DIR"),
        (["list"], "Usage: lsr1bench list [OPTIONS] [optimizers|models|datasets]"),
    ],
)
def test_usage_lines_read_as_click_writes_them(command: list[str], usage: str) -> None:
    text = in_terminal([*command, "--help"], columns=120)
    assert usage in text, text
    assert "{" not in text.split("\n\n")[0] + text.splitlines()[1], text


def test_flags_are_shown_without_a_type_and_with_their_negative() -> None:
    text = in_terminal(["run", "--help"], columns=120)
    assert "<bool>" not in text, text
    assert re.search(r"--dry-run\s+--no-dry-run", text), text
    assert re.search(r"--force\s+--no-force", text), text


def test_help_paragraphs_wrap_at_the_terminal_not_at_the_source() -> None:
    wide = in_terminal(["compare", "--help"], columns=220)
    # the docstring breaks its source line after "plus"; a terminal this wide does not
    line = next(line for line in wide.splitlines() if "A quantity regresses" in line)
    assert "the base's max over seeds plus max(floor, SPREAD x the base's max - min), for epochs" in line, wide
    narrow = in_terminal(["compare", "--help"], columns=60)
    assert all(len(line) <= 60 for line in narrow.splitlines()), narrow


def test_negative_flags_are_accepted(tmp_path: Path) -> None:
    suite = tmp_path / "one.yaml"
    suite.write_text(ONE_RUN + "epochs: 1\n")
    result = runner.invoke(app, ["run", str(suite), "--dry-run", "--no-force", "--output", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "suite 'one': 1 run," in result.output, result.output
    assert not (tmp_path / "out").exists()


def test_counts_take_the_singular_for_one(tmp_path: Path) -> None:
    suite = tmp_path / "one.yaml"
    suite.write_text(ONE_RUN)
    result = runner.invoke(app, ["validate", str(suite)])
    assert result.exit_code == 0 and "is valid: 1 run\n" in result.output, result.output
    suite.write_text("seeds: [0, 1]\n" + ONE_RUN)
    assert "is valid: 2 runs\n" in runner.invoke(app, ["validate", str(suite)]).output


def test_list_shows_every_registered_name_with_defaults_and_ranges() -> None:
    result = runner.invoke(app, ["list"])
    assert result.exit_code == 0, result.output
    for name in ("lsr1", "lsr1-ls", "lbfgs", "nag", "sgd", "momentum", "adadelta", "adam"):
        assert re.search(rf"^{re.escape(name)}: ", result.output, re.M), name
    for name in ("lenet5", "cifar_lenet", "resnet20", "mlp", "mnist-embedded", "synthetic-cifar10", "FashionMNIST"):
        assert re.search(rf"^  {re.escape(name)}\s", result.output, re.M), name
    # the paper's defaults (section 4 and the appendix) and the ranges LSR1 accepts
    assert re.search(r"^  memory\s+5\s+an integer >= 1", result.output, re.M)
    assert re.search(r"^  radius_increase\s+2\.0\s+a number >= 1\s", result.output, re.M)
    assert re.search(r"^  lr\s+0\.003 \(mnist\) / 0\.01 \(cifar10\)\s+a number > 0", result.output, re.M)
    assert "lsr1bench.optim.LSR1(method='trust_region'); second-order, step needs a closure" in result.output
    assert "torch.optim.Adam(); first-order" in result.output


@pytest.mark.parametrize(
    "what, present, absent", [("models", "resnet20", "radius_increase"), ("datasets", "CIFAR100", "lenet5")]
)
def test_list_one_kind(what: str, present: str, absent: str) -> None:
    result = runner.invoke(app, ["list", what])
    assert result.exit_code == 0 and present in result.output and absent not in result.output, result.output


def test_list_of_an_unknown_kind_exits_2_with_a_suggestion() -> None:
    result = runner.invoke(app, ["list", "optimisers"])
    assert result.exit_code == 2
    assert "list: unknown 'optimisers' (did you mean 'optimizers'?)" in result.output
