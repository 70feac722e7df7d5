"""docs/guide.md, run: every bash and python block in the order written, from a folder laid out like a
clone of the repository (the sample frame, configs/, benchmarks/). Blocks marked
``<!-- guide-test: install -->`` are checked (their extras exist, the torch pin is CI's) instead of
run; ``device`` blocks need a camera or stream and may fail only by not opening it; ``ros`` blocks
need a sourced ROS 2 and may fail only by saying so."""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "guide.md"
_BLOCK = re.compile(r"(?:<!-- guide-test: (?P<mode>[a-z]+) -->\n)?```(?P<lang>[a-z]*)\n(?P<body>.*?)```", re.S)
MODES = {None, "install", "device", "ros"}
# What a block of that mode may fail with, and nothing else.
EXPECTED_FAILURE = {"device": "cannot open video source", "ros": "needs ROS 2's rclpy"}


def guide_blocks() -> list[tuple[int, str | None, str, str]]:
    """(line, mode, language, body) of every fenced block of the guide."""
    text = GUIDE.read_text(encoding="utf-8")
    return [(text.count("\n", 0, m.start()) + 1, m.group("mode"), m.group("lang"), m.group("body"))
            for m in _BLOCK.finditer(text)]


def _extras() -> set[str]:
    """The extras pyproject.toml declares (the file, not a possibly older installed copy of it)."""
    text = (ROOT / "pyproject.toml").read_text()
    section = text.split("[project.optional-dependencies]", 1)[1].split("\n[", 1)[0]
    return set(re.findall(r"^([A-Za-z0-9_-]+)\s*=", section, re.M))


def _check_install(line_no: int, body: str) -> None:
    extras = _extras()
    ci = (ROOT / ".ci" / "run").read_text()
    for line in body.splitlines():
        if not line.startswith("pip install"):
            continue
        for token in shlex.split(line)[2:]:
            if token.startswith(".[") or token == ".":
                wanted = set(token[2:-1].split(",")) if token.startswith(".[") else set()
                assert wanted <= extras, f"guide line {line_no}: {line!r} names extras {wanted - extras} pyproject lacks"
            elif token.startswith("torch=="):
                assert f'"{token}"' in ci, f"guide line {line_no}: {token} is not the torch CI installs"
            else:
                assert token == "-e", f"guide line {line_no}: unexpected pip argument {token!r}"


def test_guide_blocks_are_known_and_plenty():
    blocks = guide_blocks()
    assert {mode for _, mode, _, _ in blocks} <= MODES
    runnable = [b for b in blocks if b[2] in ("bash", "python") and b[1] != "install"]
    assert len(runnable) >= 20, "the block pattern no longer finds the guide's commands"
    assert all(lang in ("bash", "python", "text") for _, _, lang, _ in blocks)
    assert "docs/guide.md" in (ROOT / "README.md").read_text()


@pytest.mark.slow
def test_every_command_of_the_guide_runs(tmp_path):
    tmp_path = tmp_path / "clone"
    (tmp_path / "edgedepth" / "assets").mkdir(parents=True)
    shutil.copy(ROOT / "edgedepth" / "assets" / "sample.png", tmp_path / "edgedepth" / "assets")
    for folder in ("configs", "benchmarks"):
        shutil.copytree(ROOT / folder, tmp_path / folder)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "OMP_NUM_THREADS": "1", "EDGEDEPTH_CACHE": str(tmp_path / "cache")}
    for line, mode, lang, body in guide_blocks():
        if lang not in ("bash", "python"):
            continue
        if mode == "install":
            _check_install(line, body)
            continue
        if lang == "python":  # a file outside the work folder: its copy of edgedepth/ must not shadow the package
            script = tmp_path.parent / f"guide_line_{line}.py"
            script.write_text(body, encoding="utf-8")
            command = [sys.executable, str(script)]
        else:
            command = ["bash", "-euo", "pipefail", "-c", body]
        done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        if done.returncode != 0 and not (mode in EXPECTED_FAILURE and EXPECTED_FAILURE[mode] in done.stderr):
            pytest.fail(f"docs/guide.md line {line} ({lang}) exited {done.returncode}:\n{body}\n"
                        f"--- stdout\n{done.stdout[-2000:]}\n--- stderr\n{done.stderr[-4000:]}")
