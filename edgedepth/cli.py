"""`edgedepth` command line: one entry point, one module per sub-command.

Each sub-command lives in the module that owns its work and exposes
``add_arguments(parser)`` and ``run(args) -> int``. Modules are imported only when their
command runs, so `edgedepth predict` on a device never imports torch.

A user's mistake (a missing file, a bad bundle, an impossible request) ends the command with one
line on stderr and exit status 1, not a traceback; ``EDGEDEPTH_DEBUG=1`` shows the traceback.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Sequence

# What a command raises for bad input or an unusable environment (BundleError and
# BackendUnavailableError included); anything else is a bug and keeps its traceback.
_USER_ERRORS = (OSError, ValueError, ImportError, RuntimeError, MemoryError)

# command -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "predict": ("edgedepth.commands.predict", "metric depth for images, folders or videos"),
    "info": ("edgedepth.commands.info", "backends, devices, versions, native extension status"),
    "eval": ("edgedepth.evaluate", "score predictions, a checkpoint or a bundle on a data set"),
    "scenes": ("edgedepth.datasets.procedural_cli", "render a procedural data set folder"),
    "train-data": ("edgedepth.train.shards_cli", "pre-render procedural training frames as shards"),
    "train": ("edgedepth.train.cli", "train a coarse model or refiner from a YAML config"),
    "export": ("edgedepth.export.cli", "export a checkpoint to an ONNX/OpenVINO/CoreML/TensorRT bundle"),
}


def _module(name: str):
    module_name = COMMANDS[name][0]
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        extra = {"train": "train", "train-data": "train", "export": "export"}.get(name)
        if extra and err.name and not err.name.startswith("edgedepth"):
            raise SystemExit(
                f"edgedepth {name} needs the optional package {err.name!r}: pip install 'edgedepth[{extra}]'"
            ) from err
        raise


def build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgedepth", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (_, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        # Only the invoked command's module is imported (its arguments are needed to parse).
        if name in argv:
            _module(name).add_arguments(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(argv).parse_args(argv)
    try:
        status = int(_module(args.command).run(args) or 0)
        sys.stdout.flush()  # a reader that left (`edgedepth info | head`) shows up here, not at exit
        return status
    except BrokenPipeError:
        # Nobody reads stdout any more: stop quietly (Python's documented recipe, so that the
        # interpreter's own final flush does not raise again).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except _USER_ERRORS as err:
        if os.environ.get("EDGEDEPTH_DEBUG") == "1":
            raise
        message = " ".join(str(err).split()) or type(err).__name__
        print(f"edgedepth {args.command}: error: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
