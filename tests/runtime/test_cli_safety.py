"""`edgedepth predict` loses nothing and writes nothing outside --out: folder names from '.' and
'..', inputs that would share an output name, arguments checked before any output, one unreadable
file among many; user mistakes end in one line, and a closed pipe is not an error."""
from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest

from edgedepth import Runtime
from edgedepth.cli import main
from edgedepth.depth_io import write_image

from .tiny_models import random_image


def _frame(h=24, w=32, seed=0):
    return random_image(h, w, seed)


def _predict(tiny_bundle, *args: str) -> int:
    return main(["predict", *args, "--bundle", str(tiny_bundle), "--backend", "onnxruntime", "--outputs", "npy"])


@pytest.mark.parametrize("where", [".", ".."])
def test_dot_folders_write_under_their_real_name_inside_out(tiny_bundle, tmp_path, monkeypatch, where):
    stem = f"frame-{uuid.uuid4().hex[:8]}"  # unique: the old code wrote it at the filesystem root
    shots = tmp_path / "shots"
    (shots / "sub").mkdir(parents=True)
    write_image(shots / f"{stem}.png", _frame())
    monkeypatch.chdir(shots if where == "." else shots / "sub")
    try:
        assert _predict(tiny_bundle, where, "--out", str(tmp_path / "out")) == 0
    finally:
        escaped = [p for p in (Path("/") / f"{stem}.npy", shots / f"{stem}.npy") if p.exists()]
        for p in escaped:
            p.unlink()
    assert not escaped, f"outputs escaped --out: {escaped}"
    assert (tmp_path / "out" / "shots" / f"{stem}.npy").is_file()


@pytest.mark.parametrize("layout", ["two folders, same file name", "one folder, same stem"])
def test_inputs_that_would_share_an_output_name_are_refused_first(tiny_bundle, tmp_path, capsys, layout):
    if layout.startswith("two"):
        for i, d in enumerate(("a", "b")):
            (tmp_path / d).mkdir()
            write_image(tmp_path / d / "x.png", _frame(seed=i))
        inputs = [str(tmp_path / "a" / "x.png"), str(tmp_path / "b" / "x.png")]
    else:
        (tmp_path / "seq").mkdir()
        write_image(tmp_path / "seq" / "x.png", _frame(seed=0))
        write_image(tmp_path / "seq" / "x.jpg", _frame(seed=1))
        inputs = [str(tmp_path / "seq")]
    assert _predict(tiny_bundle, *inputs, "--out", str(tmp_path / "out")) == 1
    err = capsys.readouterr().err
    assert "would both write" in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_every_output_belongs_to_its_own_input(tiny_bundle, tmp_path):
    # The stream returns results in order; names and pixels must follow them exactly.
    frames = [_frame(24 + 4 * i, 32, seed=i) for i in range(5)]
    for i, frame in enumerate(frames):
        write_image(tmp_path / f"f{i}.png", frame)
    out = tmp_path / "out"
    assert _predict(tiny_bundle, *(str(tmp_path / f"f{i}.png") for i in range(5)), "--out", str(out)) == 0
    rt = Runtime(tiny_bundle, backend="onnxruntime")
    for i, frame in enumerate(frames):
        np.testing.assert_array_equal(np.load(out / f"f{i}.npy"), rt.predict(frame).depth)


@pytest.mark.parametrize("flag, value", [("--ply-stride", "0"), ("--ply-stride", "-3"), ("--ply-stride", "two")])
def test_bad_arguments_are_refused_before_any_output(tiny_bundle, tmp_path, capsys, flag, value):
    write_image(tmp_path / "a.png", _frame())
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", str(tmp_path / "a.png"), "--bundle", str(tiny_bundle), "--out", str(tmp_path / "out"),
              flag, value])
    assert exit_info.value.code == 2 and "--ply-stride" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_an_unreadable_file_is_skipped_and_reported(tiny_bundle, tmp_path, capsys):
    (tmp_path / "seq").mkdir()
    for i in range(3):
        write_image(tmp_path / "seq" / f"f{i}.png", _frame(seed=i))
    (tmp_path / "seq" / "f1.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    assert _predict(tiny_bundle, str(tmp_path / "seq"), "--out", str(tmp_path / "out")) == 1
    assert sorted(p.name for p in (tmp_path / "out" / "seq").iterdir()) == ["f0.npy", "f2.npy"]
    err = capsys.readouterr().err
    assert "skipping" in err and "f1.png" in err and "Traceback" not in err


def _cli(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgedepth.cli", *args], capture_output=True, text=True,
                          timeout=300, **kw)


def test_user_mistakes_are_one_line_not_a_traceback(tiny_bundle, tmp_path):
    write_image(tmp_path / "a.png", _frame())
    for args, expected in [
        (["predict", str(tmp_path / "missing.png")], "input not found"),
        (["predict", str(tmp_path / "a.png"), "--bundle", str(tmp_path / "no.edgedepth")], "no.edgedepth not found"),
        (["predict", str(tmp_path / "a.png"), "--bundle", str(tiny_bundle), "--threads", "4000"], "threads must be"),
        (["info", "--json"], None),
    ]:
        out = _cli(*args)
        if expected is None:
            assert out.returncode == 0, out.stderr
            continue
        assert out.returncode == 1 and expected in out.stderr, out.stderr
        assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr, out.stderr
    out = _cli("predict", str(tmp_path / "a.png"), "--bundle", str(tiny_bundle), "--fx", "1e300",
               "--out", str(tmp_path / "out"))
    assert out.returncode == 1 and "fx = 1e+300 px" in out.stderr and "Traceback" not in out.stderr, out.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_a_reader_that_leaves_early_is_not_an_error():
    # `edgedepth info | head -1`: the pipe closes before edgedepth has written everything.
    proc = subprocess.Popen([sys.executable, "-m", "edgedepth.cli", "info"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.close()
    _, err = proc.communicate(timeout=300)
    assert b"Traceback" not in err and b"BrokenPipeError" not in err, err.decode()
    assert proc.returncode == 1
