"""The command line as a user meets it: --version, every command's description, example and defaults, the
model given as --model everywhere, and the exit codes the main help documents. Exit 1 (a run that failed,
or partly) is checked where real runs fail: test_divergence (training diverged), test_check (unusable
clips), test_bundle (clips that cannot be traced); 143 in test_sweep_faults."""

import re
import shlex
import signal
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path

import pytest

from sourcetrace.cli import HANDLERS, build_parser, main

REPO = Path(__file__).resolve().parent.parent


def help_of(command: str, capsys) -> str:
    with pytest.raises(SystemExit) as done:
        main([*command.split(), "--help"])
    assert done.value.code == 0
    return capsys.readouterr().out


def test_version_is_the_installed_package_version(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"sourcetrace {version('sourcetrace')}"


def test_main_help_documents_every_exit_code(capsys):
    text = help_of("", capsys)
    for code, meaning in (("0", "done"), ("1", "runtime failure"), ("2", "usage"), ("130", "SIGINT"), ("143", "")):
        assert f"  {code} " in text or f"; {code}:" in text, code
        assert meaning in text
    assert all(command.split()[0] in text for command in HANDLERS)


@pytest.mark.parametrize("command", sorted(HANDLERS) + ["corpus"])
def test_every_command_has_a_description_an_example_that_parses_and_its_defaults(command, capsys):
    text = help_of(command, capsys)
    description = text.split("\n\n")[1]
    assert description.strip() and not description.startswith(("options", "positional")), text
    examples = [line.strip() for line in text.split("examples:\n")[1].splitlines() if line.strip()]
    assert examples and all(e.startswith(f"sourcetrace {command} ") or e == f"sourcetrace {command}" for e in examples)
    for example in examples:
        build_parser().parse_args(shlex.split(example)[1:])  # SystemExit (a failure) on a wrong flag
    if command in ("corpus build", "trace", "ui", "analyze"):
        assert "(default: " in text


@pytest.mark.parametrize(
    "argv",
    [["analyze"], ["evaluate", "--root", "r"], ["trace", "clip.wav"], ["enroll", "--list"], ["export", "--out", "o"]],
)
def test_model_is_taken_as_model_everywhere(argv):
    args = build_parser().parse_args([*argv, "--model", "m"])
    assert args.model == "m"


def test_the_model_is_named_by_model_only(tmp_path, capsys):
    """The positional MODEL of 0.1.0's analyze and export is gone: a bare path is refused by the parser."""
    for argv in (["analyze", str(tmp_path / "m")], ["export", str(tmp_path / "m"), "--out", str(tmp_path / "o")]):
        with pytest.raises(SystemExit) as done:
            main(argv)
        assert done.value.code == 2 and "--model" in capsys.readouterr().err


def test_usage_and_config_errors_exit_2_before_anything_is_written(tmp_path, capsys):
    with pytest.raises(SystemExit) as done:
        main(["train", "--out", str(tmp_path / "run")])  # --root missing
    assert done.value.code == 2 and "--root" in capsys.readouterr().err
    code = main(["train", "--root", str(tmp_path), "--out", str(tmp_path / "run"), "--set", "loss.nme=ge2e"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "loss.nme" in err[0]
    assert not (tmp_path / "run").exists()


def test_ctrl_c_exits_130_with_one_line(tmp_path):
    """A corpus build (long enough to interrupt) stopped by SIGINT once its first clips exist."""
    out = tmp_path / "corpus"
    cmd = [sys.executable, "-m", "sourcetrace.cli", "corpus", "build", "--out", str(out), "--preset", "tiny"]
    # As a terminal's foreground command gets it: SIGINT not ignored. A test run started in the background
    # (`pytest ... &`) ignores SIGINT, every child inherits that, and the build would rightly not stop.
    proc = subprocess.Popen(
        [*cmd, "--workers", "1", "--no-progress"],
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and not any(out.rglob("*.flac")):
        time.sleep(0.2)
    assert proc.poll() is None, "the build ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted" in err and "Traceback" not in err


@pytest.mark.parametrize("doc", ["README.md", *sorted(p.name for p in (REPO / "docs").glob("*.md"))])
def test_every_command_line_of_the_docs_parses(doc):
    """Code-block lines ``sourcetrace COMMAND ...`` without placeholders ([optional], ...), continuations joined."""
    text = (REPO / doc if doc == "README.md" else REPO / "docs" / doc).read_text()
    lines = "\n".join(re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S)).replace("\\\n", " ").splitlines()
    parsed = 0
    for line in lines:
        m = re.search(r"(?:^|\s)(?:\S*/)?sourcetrace\s+(\S.*)$", line.split(" #", 1)[0])
        if not m or "[" in m.group(1) or "..." in m.group(1):
            continue
        argv = shlex.split(re.split(r"\s\d?>|[|&;]", m.group(1))[0])
        args = build_parser().parse_args(argv)  # SystemExit (a failure) on a wrong flag or a missing argument
        assert args.command, line
        parsed += 1
    if doc == "README.md":
        assert parsed >= 12
