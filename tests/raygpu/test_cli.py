"""`raygpu`: one command, shared options, the same exit codes, no tracebacks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from raygpu import cli

RAYGPU = Path(sys.executable).with_name("raygpu")


def run(*argv: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(RAYGPU), *argv], capture_output=True, text=True, timeout=120, **kwargs
    )


def test_help_lists_every_command():
    proc = run("--help")
    assert proc.returncode == 0
    for command in ("plan", "render", "submit", "serve", "destroy", "orphans", "demo"):
        assert f"    {command} " in proc.stdout
    assert set(cli.COMMANDS) == {
        "plan",
        "preflight",
        "render",
        "submit",
        "serve",
        "data",
        "status",
        "logs",
        "dashboard",
        "sleep",
        "wake",
        "monitor",
        "destroy",
        "orphans",
        "demo",
    }


@pytest.mark.parametrize(
    "command", ["plan", "preflight", "render", "destroy", "orphans"]
)
def test_stack_commands_share_one_stack_option(command, capsys):
    assert cli.main([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert "--stack NAME" in out and "Pulumi.NAME.yaml" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["plan"], "the following arguments are required: --stack"),
        (["nosuch"], "invalid choice: 'nosuch'"),
        (["plan", "--stack", "dev", "--", "x"], "takes no words after `--`"),
        (["plan", "--stack", "dev", "--bogus"], "unrecognized arguments: --bogus"),
        (
            ["submit", "--address", "http://127.0.0.1:1", "--submission-id", "bad id"]
            + ["--", "python", "x.py"],
            "--submission-id: 'bad id' is not allowed",
        ),
    ],
)
def test_usage_errors_exit_2_in_a_line_or_two_without_traceback(argv, message):
    proc = run(*argv)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) <= 2  # usage line + the error


def test_a_config_error_exits_2(tmp_path):
    bad = tmp_path / "Pulumi.bad.yaml"
    bad.write_text("config:\n  raygpu:azCount: 9\n")
    proc = run("plan", "--stack", "bad", "--config", str(bad))
    assert proc.returncode == 2
    assert "raygpu:azCount" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_an_unexpected_error_is_one_line_unless_debugging(monkeypatch, capsys):
    def broken(args):
        raise KeyError("boom")

    monkeypatch.setattr("raygpu.plan.run", broken)
    assert cli.main(["plan", "--stack", "dev"]) == 1
    err = capsys.readouterr().err
    assert err == (
        "raygpu plan: unexpected error: KeyError: 'boom' "
        "(set RAYGPU_DEBUG=1 for the traceback)\n"
    )
    monkeypatch.setenv("RAYGPU_DEBUG", "1")
    assert cli.main(["plan", "--stack", "dev"]) == 1
    assert "Traceback" in capsys.readouterr().err


def test_only_the_chosen_commands_module_is_imported():
    code = (
        "import sys, contextlib, io\n"
        "from raygpu.cli import COMMANDS, main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    main(['--help'])\n"
        "    main(['plan', '--help'])\n"
        "print(sorted(m for m, _ in COMMANDS.values() if m in sys.modules))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert proc.stdout.strip() == "['raygpu.plan']", proc.stderr


def test_a_command_that_cannot_load_is_one_line(monkeypatch, capsys):
    monkeypatch.setitem(cli.COMMANDS, "plan", ("raygpu.no_such_module", "x"))
    assert cli.main(["plan", "--stack", "dev"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("raygpu plan: error: cannot load raygpu.no_such_module")
    assert err.count("\n") == 1
