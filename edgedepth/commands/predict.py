"""`edgedepth predict IMAGE_OR_DIR... [--bundle B] [--backend NAME] [--out DIR]`.

For every frame of every input (an image, a folder of images, a video file) it writes, under
``--out``: ``NAME.npy`` (float32 z-depth in metres, NaN where invalid), ``NAME_depth16.png`` (uint16
millimetres, 0 where invalid), ``NAME_color.png`` (colourised, for looking at; invalid black) and
``NAME.ply`` (coloured point cloud of the valid pixels with the camera intrinsics: ``--fx`` in
pixels, or the bundle's training camera). Frames of a video or a
folder go through ``Runtime.stream`` with a progress bar.

Output names are the input's stem (a folder's files under the folder's name), always inside
``--out``; two inputs that would write the same name are refused before anything runs. An image that
cannot be read is skipped with a one-line message, the others are still written, and the command
then exits with status 1.
"""
from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path
from typing import Iterator

from .arguments import tile_grid

import numpy as np

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
VIDEO_EXTS = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v"}
OUTPUTS = ("npy", "png16", "color", "ply")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR", help="images, folders of images or video files")
    parser.add_argument("--bundle", default=None, help="NAME.edgedepth bundle folder (default: the embedded model)")
    parser.add_argument("--backend", default="auto", help="auto, onnxruntime, openvino, tensorrt, coreml or torch")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, gpu (as the backend understands it)")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "fp16", "int8"])
    parser.add_argument("--tiles", type=tile_grid, metavar="ROWSxCOLS", help="override the bundle's grid, e.g. 4x4")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads")
    parser.add_argument("--out", default="out", help="output folder (default: out)")
    parser.add_argument("--outputs", default=",".join(OUTPUTS),
                        help=f"comma-separated subset of {','.join(OUTPUTS)} (default: all)")
    parser.add_argument("--fx", type=float, default=None,
                        help="camera focal length in pixels: rescales metric depth and sets the point cloud's camera")
    parser.add_argument("--ply-stride", type=_positive_int, default=1, help="keep every N-th pixel in the point cloud")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _frames(inputs: list[str]) -> list[tuple[str, object]]:
    """(output name, source) pairs; a source is an image path or ("video", path). Names are
    relative ("stem" or "folder/stem"), so outputs stay inside --out, and unique."""
    items: list[tuple[str, object]] = []
    for raw in inputs:
        path = Path(raw)
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTS)
            if not files:
                raise FileNotFoundError(f"folder {path} holds no images ({', '.join(sorted(IMAGE_EXTS))})")
            # "." and ".." have no name of their own: use the folder's real one ("/" has none: "root").
            folder = path.resolve().name or "root"
            items += [(f"{folder}/{p.stem}", p) for p in files]
        elif path.suffix.lower() in VIDEO_EXTS:
            if not path.is_file():
                raise FileNotFoundError(f"video file not found: {path}")
            items.append((path.stem, ("video", path)))
        elif path.is_file():
            items.append((path.stem, path))
        else:
            raise FileNotFoundError(f"input not found: {path}")
    sources: dict[str, list[str]] = collections.defaultdict(list)
    for name, src in items:
        sources[name].append(str(src[1] if isinstance(src, tuple) else src))
    clashes = {name: paths for name, paths in sources.items() if len(paths) > 1}
    if clashes:
        name, paths = next(iter(clashes.items()))
        raise ValueError(f"inputs {' and '.join(paths)} would both write {name}.*; rename one or predict them "
                         "in separate runs with different --out folders")
    return items


def _video_frames(path: Path) -> Iterator[np.ndarray]:
    try:
        import av
    except ImportError as err:
        raise SystemExit(f"reading video {path} needs PyAV: pip install 'edgedepth[video]'") from err
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            yield frame.to_ndarray(format="rgb24")


def _video_length(path: Path) -> int | None:
    try:
        import av

        with av.open(str(path)) as container:
            return container.streams.video[0].frames or None
    except Exception:  # only for the progress bar's total
        return None


def _expand(items: list[tuple[str, object]], skipped: list[str]) -> tuple[Iterator[tuple[str, np.ndarray]], int | None]:
    """The frames of every item; an image that cannot be read is reported, added to ``skipped`` and
    passed over (one corrupt file in a folder must not cost the others)."""
    from ..depth_io import read_image

    total: int | None = 0
    for _, src in items:
        n = _video_length(src[1]) if isinstance(src, tuple) else 1
        total = None if (total is None or n is None) else total + n

    def gen() -> Iterator[tuple[str, np.ndarray]]:
        for name, src in items:
            if isinstance(src, tuple):
                for i, frame in enumerate(_video_frames(src[1])):
                    yield f"{name}/{i:06d}", frame
                continue
            try:
                image = read_image(src)
            except (OSError, ValueError) as err:
                print(f"edgedepth predict: skipping {src}: {' '.join(str(err).split())}", file=sys.stderr)
                skipped.append(str(src))
                continue
            yield name, image

    return gen(), total


def _write(out: Path, name: str, image: np.ndarray, depth: np.ndarray, valid: np.ndarray, intrinsics: np.ndarray,
           outputs: set[str], ply_stride: int) -> None:
    from ..depth_io import write_colorized_depth, write_depth_png, write_npy
    from ..pointcloud import write_depth_ply

    base = out / name
    base.parent.mkdir(parents=True, exist_ok=True)
    if "npy" in outputs:
        write_npy(base.with_name(base.name + ".npy"), np.where(valid, depth, np.float32(np.nan)))
    depth = np.where(valid, depth, np.float32(0))  # the image formats' "no depth"
    if "png16" in outputs:
        write_depth_png(base.with_name(base.name + "_depth16.png"), depth)
    if "color" in outputs:
        write_colorized_depth(base.with_name(base.name + "_color.png"), depth)
    if "ply" in outputs:
        write_depth_ply(base.with_name(base.name + ".ply"), depth, intrinsics, image, stride=ply_stride)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..pointcloud import default_intrinsics
    from ..runtime import Runtime

    outputs = {o.strip() for o in args.outputs.split(",") if o.strip()}
    unknown = outputs - set(OUTPUTS)
    if unknown or not outputs:
        raise SystemExit(f"--outputs must be a comma-separated subset of {','.join(OUTPUTS)}, got {args.outputs!r}")
    if args.fx is not None and not args.fx > 0:
        raise SystemExit(f"--fx must be > 0 pixels, got {args.fx}")
    items = _frames(args.inputs)
    runtime = Runtime(args.bundle, backend=args.backend, device=args.device, precision=args.precision,
                      tiles=args.tiles, threads=args.threads)
    print(f"edgedepth: {runtime.backend_reason}, device {runtime.device}, precision {runtime.precision}, "
          f"bundle {runtime.bundle.name}", file=sys.stderr)
    skipped: list[str] = []
    frames, total = _expand(items, skipped)
    out = Path(args.out)
    pending: collections.deque[tuple[str, np.ndarray]] = collections.deque()

    def feed() -> Iterator[np.ndarray]:
        # The stream needs bare frames and returns results in order: each frame's name and pixels
        # wait in this queue until its result arrives.
        for name, image in frames:
            pending.append((name, image))
            yield image

    totals: list[float] = []
    for result in tqdm(runtime.stream(feed(), intrinsics=args.fx), total=total, unit="frame", disable=None):
        name, image = pending.popleft()
        h, w = image.shape[:2]
        k = default_intrinsics(h, w, runtime.bundle.fx_norm)
        if args.fx is not None:
            k[0, 0] = k[1, 1] = args.fx
        _write(out, name, image, result.depth, result.valid, k, outputs, args.ply_stride)
        totals.append(result.timings["total"])
    if totals:
        print(f"{len(totals)} frame(s) -> {out}/  ({np.mean(totals):.1f} ms/frame)", file=sys.stderr)
    if skipped:
        print(f"edgedepth predict: {len(skipped)} input(s) could not be read: {', '.join(skipped)}", file=sys.stderr)
        return 1
    return 0
