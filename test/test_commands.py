"""The README's set-up gives the ``cloudypoints`` and ``depth_node`` commands, and every
``cloudypoints`` command the README shows is accepted as written.

``scripts/setup_env.sh`` runs for real on a throwaway venv layered over the test's own (its
packages are visible through a ``site.addsitedir`` .pth file, so nothing is downloaded), with
``CLOUDYPOINTS_EDITABLE=1`` because that venv lies outside the checkout. Commands then run from
that venv's ``bin`` after ``source scripts/env.sh``, as a newcomer would run them.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from cloudypoints_core.cli.main import build_parser

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv set up by scripts/setup_env.sh (requirements already satisfied by the layer)."""
    import hashlib

    path = tmp_path_factory.mktemp("venv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    site = Path(sysconfig.get_path("purelib", vars={"base": str(path)}))
    base = sysconfig.get_path("purelib")
    (site / "_cloudypoints_test_base.pth").write_text(f"import site; site.addsitedir({base!r})\n")
    # Requirements are satisfied by the layer: the stamp says so, as after a first run.
    digest = hashlib.sha256((ROOT / "requirements.txt").read_bytes()).hexdigest()
    (path / ".requirements.sha256").write_text(digest + "\n")
    return path


def _setup(venv: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CLOUDYPOINTS_VENV": str(venv), "CLOUDYPOINTS_EDITABLE": "1"}
    return subprocess.run(
        ["bash", str(ROOT / "scripts" / "setup_env.sh")],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )


def _in_env(venv: Path, command: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """``command`` in bash after ``source scripts/env.sh`` with the test venv."""
    env = {
        **os.environ,
        "CLOUDYPOINTS_VENV": str(venv),
        "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
        "ROS_DOMAIN_ID": str(120 + (os.getpid() + 61) % 90),
    }
    return subprocess.run(
        ["bash", "-c", f"source {shlex.quote(str(ROOT / 'scripts' / 'env.sh'))} && {command}"],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=600,
    )


@pytest.fixture(scope="module")
def installed(venv: Path) -> Path:
    first = _setup(venv)
    assert first.returncode == 0, first.stderr
    assert "installing the cloudypoints and depth_node commands" in first.stderr
    return venv


def test_setup_installs_the_commands_once(installed: Path) -> None:
    for name in ("cloudypoints", "depth_node"):
        assert os.access(installed / "bin" / name, os.X_OK), name
    again = _setup(installed)
    assert again.returncode == 0, again.stderr
    assert "commands cloudypoints and depth_node are installed" in again.stderr
    assert "installing" not in again.stderr  # a rerun is cheap: nothing is reinstalled


def test_a_shared_venv_is_left_alone(venv: Path, installed: Path) -> None:
    env = {**os.environ, "CLOUDYPOINTS_VENV": str(venv)}
    env.pop("CLOUDYPOINTS_EDITABLE", None)
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts" / "setup_env.sh")], capture_output=True, text=True, env=env
    )
    assert proc.returncode == 0, proc.stderr
    assert "commands not (re)installed" in proc.stderr


def _subcommands() -> list[list[str]]:
    """Every subcommand path of the cloudypoints parser (``bag convert`` etc.)."""
    import argparse

    def walk(parser: argparse.ArgumentParser, prefix: list[str]) -> list[list[str]]:
        out = [prefix]
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, child in action.choices.items():
                    out += walk(child, [*prefix, name])
        return out

    return walk(build_parser(), [])


def test_cloudypoints_and_every_subcommand_help_from_the_venv(installed: Path) -> None:
    paths = _subcommands()
    assert ["bag", "replay-eval"] in paths and ["evaluate"] in paths
    script = " && ".join(
        f"cloudypoints {' '.join(p)} --help > /dev/null && echo OK:{'/'.join(p)}" for p in paths
    )
    proc = _in_env(installed, f"command -v cloudypoints && {script}")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == str(installed / "bin" / "cloudypoints")
    assert proc.stdout.count("OK:") == len(paths)


def test_depth_node_command_starts_and_reports_a_missing_model(
    installed: Path, tmp_path: Path
) -> None:
    proc = _in_env(
        installed,
        f"depth_node --ros-args -p model_path:={tmp_path / 'no_model'}",
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "cannot start" in proc.stdout + proc.stderr


def _readme_commands() -> list[str]:
    """Every ``cloudypoints ...`` command in the README (code blocks and inline code), with
    continuation lines joined, comments dropped and ``[optional parts]`` kept (brackets
    removed, the first of ``a|b`` alternatives taken)."""
    text = README.read_text(encoding="utf-8")
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    lines: list[str] = []
    for block in blocks:
        lines += block.replace("\\\n", " ").splitlines()
    # Inline code with options is a command; a bare `cloudypoints evaluate` names one.
    lines += [c for c in re.findall(r"`(cloudypoints [^`]+)`", text) if " -" in c]
    commands = []
    for line in lines:
        line = line.split("  #")[0].strip()
        if not line.startswith("cloudypoints "):
            continue
        line = re.sub(r"\[([^\]]*)\]", r"\1", line)
        line = re.sub(r"(\S+?)\|\S+", r"\1", line)
        commands.append(" ".join(line.split()))
    return commands


def _options_of(words: list[str]) -> set[str]:
    """Option strings of the subcommand ``words`` (e.g. ["bag", "convert"])."""
    import argparse

    parser = build_parser()
    for word in words:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = sub.choices[word]
    return {o for a in parser._actions for o in a.option_strings}


def test_every_readme_command_is_accepted_as_written() -> None:
    commands = _readme_commands()
    assert len(commands) >= 15, commands
    parser = build_parser()
    for command in commands:
        if command.endswith(" ..."):
            # A fragment ("... and the options shown above"): its subcommand and options must
            # exist; the rest of the command is elsewhere.
            words = shlex.split(command)[1:-1]
            path = [w for w in words[:2] if not w.startswith("-")]
            while path and not _is_subcommand(path):
                path.pop()
            flags = {w.split("=")[0] for w in words if w.startswith("--")}
            assert path and flags <= _options_of(path), (command, flags - _options_of(path))
            continue
        try:
            args = parser.parse_args(shlex.split(command)[1:])
        except SystemExit as exc:  # argparse's way of refusing (or of answering --help)
            if exc.code == 0 and "--help" in command:
                continue
            pytest.fail(f"README command refused ({exc.code}): {command}")
        assert callable(args.func), command


def _is_subcommand(words: list[str]) -> bool:
    try:
        _options_of(words)
    except (KeyError, StopIteration):
        return False
    return True


def test_readme_synthcity_commands_run_as_written(installed: Path, tmp_path: Path) -> None:
    # The README commands that need no download and run in seconds, verbatim.
    wanted = (
        "cloudypoints bag convert --dataset synthcity --seed 3 --frames 60 --out bags/synth_3 "
        "--storage sqlite3",
        "cloudypoints evaluate --dataset synthcity --out reports/eval_synth",
    )
    commands = _readme_commands()
    for command in wanted:
        assert command in commands, command
    proc = _in_env(
        installed, " && ".join(wanted) + " && cloudypoints bag info bags/synth_3", tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "/camera/depth_gt" in proc.stdout
    assert (tmp_path / "reports" / "eval_synth" / "results.json").is_file()


def test_readme_node_command_runs_as_written(installed: Path) -> None:
    # The README's node command without launch, verbatim: it must come up on the remapped
    # topics and stop cleanly on Ctrl-C.
    import signal
    import time

    text = README.read_text(encoding="utf-8")
    block = re.search(r"(python -m cloudypoints_ros\.depth_node [^\n]*\\\n[^\n]*)", text)
    assert block is not None
    command = " ".join(block.group(1).replace("\\\n", " ").split())
    env = {
        **os.environ,
        "CLOUDYPOINTS_VENV": str(installed),
        "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
        "ROS_DOMAIN_ID": str(120 + (os.getpid() + 67) % 90),
    }
    proc = subprocess.Popen(
        ["bash", "-c", f"source scripts/env.sh && exec {command}"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    output = []
    deadline = time.monotonic() + 120
    try:
        for line in proc.stdout:
            output.append(line)
            if "subscribed to /camera/image_raw" in line or time.monotonic() > deadline:
                break
    finally:
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
    log = "".join(output) + rest
    assert "subscribed to /camera/image_raw" in log and "/camera/camera_info" in log, log
    assert proc.returncode == 0, log
