"""The command line itself: --version, python -m edgedepth, help on every option with its choices, and
examples under every command that parse."""
from __future__ import annotations

import argparse
import shlex
import subprocess
import sys

import pytest

from edgedepth import __version__
from edgedepth.cli import COMMANDS, EXAMPLES, build_parser, main


def _command_parser(name: str) -> argparse.ArgumentParser:
    parser = build_parser([name])
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0 and capsys.readouterr().out.strip() == f"edgedepth {__version__}"


def test_python_dash_m_edgedepth_is_the_same_program():
    done = subprocess.run([sys.executable, "-m", "edgedepth", "--version"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == f"edgedepth {__version__}"
    done = subprocess.run([sys.executable, "-m", "edgedepth", "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and all(name in done.stdout for name in COMMANDS)


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_option_has_help_its_choices_and_examples(name):
    parser = _command_parser(name)
    text = parser.format_help()
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        assert action.help, f"edgedepth {name} {action.option_strings or action.dest} has no help"
        for choice in action.choices or ():
            assert str(choice) in text, f"edgedepth {name} --help does not list {choice!r}"
    assert "examples:" in text and all(line in text for line in EXAMPLES[name])


@pytest.mark.parametrize("name, line", [(n, line) for n, lines in EXAMPLES.items() for line in lines])
def test_examples_parse(name, line):
    argv = shlex.split(line)[1:]
    assert argv[0] == name
    build_parser(argv).parse_args(argv)  # argparse exits on anything it does not accept

