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
    "build-engines": ("edgedepth.commands.build_engines",
                      "build a bundle's TensorRT engines now, into the runtime's cache (or print trtexec lines)"),
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


# command -> example command lines, shown under its --help (tests parse every one; docs/guide.md runs them).
EXAMPLES: dict[str, tuple[str, ...]] = {
    "predict": (
        "edgedepth predict edgedepth/assets/sample.png --out out",
        "edgedepth predict drive.mp4 --vmin 1 --vmax 60 --out out",
        "edgedepth predict --camera 0 --max-frames 300 --outputs video --out camera",
        "edgedepth predict rtsp://192.168.1.20:8554/front --fx 1400 --out front",
        "edgedepth predict --bag run1 --topic /camera/image_raw --out-bag run1_depth --pointcloud",
    ),
    "info": ("edgedepth info", "edgedepth info --json"),
    "eval": (
        "edgedepth eval folder mydata --split val --bundle my.edgedepth --out eval_out",
        "edgedepth eval folder mydata --split val --pred predictions/ --align scale_shift",
    ),
    "scenes": (
        "edgedepth scenes mydata/train --count 64 --size 640x360",
        "edgedepth scenes mydata/val --count 8 --size 640x360 --seed 1 --sensor lidar",
    ),
    "train-data": (
        "edgedepth train-data data/train1080 --count 640 --size 1920x1080",
        "edgedepth train-data data/val1080 --count 8 --size 1920x1080 --seed 1000",
    ),
    "train": (
        "edgedepth train configs/default-coarse.yaml",
        "edgedepth train configs/default-coarse.yaml --set data.source=folder --set data.root=mydata --check",
        "edgedepth train configs/distill-real.yaml --out runs/my-distill",
    ),
    "export": (
        "edgedepth export runs/default-refiner/final --out my.edgedepth",
        "edgedepth export runs/default-refiner/final --targets onnx,openvino,torch --precision fp32,int8 "
        "--calib folder:mydata/train --out my.edgedepth",
    ),
    "build-engines": (
        "edgedepth build-engines my.edgedepth --precision int8",
        "edgedepth build-engines my.edgedepth --precision fp16 --dla-core 0 --device cuda:0",
        "edgedepth build-engines my.edgedepth --print-trtexec",
    ),
}


def build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    from .version import __version__

    parser = argparse.ArgumentParser(prog="edgedepth", description=__doc__.splitlines()[0],
                                     epilog="run `edgedepth COMMAND --help` for a command's options and examples; "
                                            "`python -m edgedepth` is the same program")
    parser.add_argument("--version", action="version", version=f"edgedepth {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (_, help_text) in COMMANDS.items():
        examples = "examples:\n" + "\n".join(f"  {line}" for line in EXAMPLES[name])
        p = sub.add_parser(name, help=help_text, description=help_text, epilog=examples,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
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
