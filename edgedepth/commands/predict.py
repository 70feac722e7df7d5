"""`edgedepth predict INPUT... | --camera N | --bag IN --topic T --out-bag OUT [--bundle B] [--out DIR]`.

For every frame of every input (an image, a folder of images, a video file, a stream URL such as
``rtsp://``, a camera) it writes, under ``--out``: ``NAME.npy`` (float32 z-depth in metres, NaN
where invalid), ``NAME_depth16.png`` (uint16 in ``--png16-unit``, millimetres by default and
recorded in the file; 0 where invalid or beyond what 16 bits hold, counted and reported),
``NAME_color.png`` (colourised over one fixed range, ``--vmin`` to ``--vmax``, invalid black;
``legend.png`` is its key) and ``NAME.ply`` (coloured point cloud of the valid pixels with the
camera intrinsics: ``--fx`` in pixels, or the bundle's training camera); for a video, stream or
camera also ``NAME_depth.mp4`` (``video``: the colourised depth with the legend under it).
Frames go through ``Runtime.stream`` with a progress bar, one stream per video, stream or camera
(stabilised in time) and one per run of images and folders (independent photos unless
``--stabilize on``). ``--bag`` converts one topic of a ROS 2 bag instead (``edgedepth.ros.bag``).

Output names are the input's stem (a folder's files under the folder's name), always inside
``--out``; two inputs that would write the same name are refused before anything runs. An image that
cannot be read is skipped with a one-line message, the others are still written, and the command
then exits with status 1.
"""
from __future__ import annotations

import argparse
import collections
import re
import sys
from pathlib import Path
from typing import Iterator, Optional

from .arguments import tile_grid

import numpy as np

from ..video import VIDEO_SUFFIXES, is_gstreamer_pipeline, is_stream_url

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
VIDEO_EXTS = set(VIDEO_SUFFIXES)
OUTPUTS = ("npy", "png16", "color", "ply", "video")
IMAGE_OUTPUTS = "npy,png16,color,ply"
VIDEO_OUTPUTS = "video,png16"
PNG16_UNITS = {"mm": 1e-3, "cm": 1e-2}
COLOR_NEAR = 1.0  # metres: the near end of the default colour range


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="*", metavar="INPUT",
                        help="images, folders of images, video files or stream URLs (rtsp://, http://)")
    parser.add_argument("--bundle", default=None, help="NAME.edgedepth bundle folder (default: the embedded model)")
    parser.add_argument("--backend", default="auto",
                        help="auto, onnxruntime, openvino, tensorrt, coreml or torch (torch runs bundles exported "
                             "with --targets torch)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, gpu (as the backend understands it)")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "fp16", "int8"],
                        help="refiner precision (the coarse model follows where the bundle has it); auto: the "
                             "backend's best for the device among those the bundle holds")
    parser.add_argument("--tiles", type=tile_grid, metavar="ROWSxCOLS", help="override the bundle's grid, e.g. 4x4")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads")
    parser.add_argument("--out", default="out", help="output folder (default: out)")
    parser.add_argument("--outputs", default=None,
                        help=f"comma-separated subset of {','.join(OUTPUTS)} (default: {IMAGE_OUTPUTS} for images, "
                             f"{VIDEO_OUTPUTS} when the inputs hold a video, stream or camera)")
    parser.add_argument("--fx", type=float, default=None,
                        help="camera focal length in pixels: rescales metric depth and sets the point cloud's camera")
    parser.add_argument("--ply-stride", type=_positive_int, default=1, help="keep every N-th pixel in the point cloud")
    look = parser.add_argument_group("colours and 16-bit PNGs")
    look.add_argument("--vmin", type=float, default=None,
                      help=f"near end of the colour range in metres (default {COLOR_NEAR:g}), the same for every frame")
    look.add_argument("--vmax", type=float, default=None,
                      help="far end of the colour range in metres (default: the bundle's valid range, else 80)")
    look.add_argument("--no-legend", action="store_true", help="no colour bar under the depth video")
    look.add_argument("--png16-unit", default="mm", metavar="mm|cm|METRES",
                      help="unit of the 16-bit PNGs: mm (default, up to 65.535 m), cm (up to 655.35 m) or metres per "
                           "unit, e.g. 0.005; depth beyond 65535 units is written as 0 and counted")
    video = parser.add_argument_group("videos, streams and cameras")
    video.add_argument("--camera", metavar="N|PIPELINE",
                       help="read a camera: an OpenCV device index (0 = /dev/video0) or a GStreamer pipeline ending in "
                            "appsink (Jetson CSI cameras); runs until Ctrl-C or --max-frames")
    video.add_argument("--max-frames", type=int, default=None, help="stop each video, stream or camera after N frames")
    video.add_argument("--stabilize", choices=["auto", "on", "off"], default="auto",
                       help="temporal stabiliser: auto (default) = on for videos, streams, cameras and bags, off for "
                            "images and folders; on also treats each folder as one sequence")
    video.add_argument("--fps", type=float, default=10.0,
                       help="frame rate of a depth video whose source declares none, e.g. a folder (default 10)")
    ros = parser.add_argument_group("ROS 2 bags (pip install 'edgedepth[ros]'; no ROS install needed)")
    ros.add_argument("--bag", metavar="IN", help="a ROS 2 bag (folder, or .db3/.mcap file) to read frames from")
    ros.add_argument("--topic", help="its sensor_msgs/Image or CompressedImage topic, e.g. /camera/image_raw")
    ros.add_argument("--camera-info-topic", metavar="TOPIC",
                     help="the camera's sensor_msgs/CameraInfo (default: the image topic's sibling camera_info if the "
                          "bag has it, else the bundle's camera)")
    ros.add_argument("--out-bag", metavar="OUT", help="the bag to write (a new folder; never overwritten)")
    ros.add_argument("--depth-topic", metavar="TOPIC", help="depth topic (default: <camera namespace>/depth/image)")
    ros.add_argument("--encoding", choices=["32FC1", "16UC1"], default="32FC1",
                     help="REP 118: 32FC1 metres with NaN unknown (default) or 16UC1 millimetres with 0 unknown")
    ros.add_argument("--pointcloud", action="store_true",
                     help="also write sensor_msgs/PointCloud2 on <depth namespace>/points (every --ply-stride-th pixel)")
    ros.add_argument("--storage", choices=["sqlite3", "mcap"], default=None,
                     help="storage of the output bag (default: the input's)")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _stream_name(text: str) -> str:
    """A file-name-safe output name for a stream URL or pipeline: its last path part, else 'stream'."""
    tail = re.sub(r"[^A-Za-z0-9_.-]+", "_", text.split("?")[0].rstrip("/").rsplit("/", 1)[-1]).strip("._")
    return tail or "stream"


def _frames(inputs: list[str], camera: Optional[str] = None) -> list[tuple[str, object]]:
    """(output name, source) pairs; a source is an image path or ("video", path, URL, pipeline or camera
    index). Names are relative ("stem" or "folder/stem"), so outputs stay inside --out, and unique."""
    items: list[tuple[str, object]] = []
    for raw in inputs:
        path = Path(raw)
        if is_stream_url(raw) or is_gstreamer_pipeline(raw):
            items.append((_stream_name(raw), ("video", raw)))
        elif path.is_dir():
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
        elif raw.isdigit():
            raise FileNotFoundError(f"input not found: {path} (for camera {raw} use --camera {raw})")
        else:
            raise FileNotFoundError(f"input not found: {path}")
    if camera is not None:
        index = int(camera) if camera.isdigit() else camera
        items.append((f"camera{index}" if isinstance(index, int) else _stream_name(camera), ("video", index)))
    sources: dict[str, list[str]] = collections.defaultdict(list)
    for name, src in items:
        sources[name].append(str(src[1] if isinstance(src, tuple) else src))
    clashes = {name: paths for name, paths in sources.items() if len(paths) > 1}
    if clashes:
        name, paths = next(iter(clashes.items()))
        raise ValueError(f"inputs {' and '.join(paths)} would both write {name}.*; rename one or predict them "
                         "in separate runs with different --out folders")
    return items


def _video_frames(source, max_frames: Optional[int] = None) -> Iterator[np.ndarray]:
    """RGB frames of a video file, stream URL, pipeline or camera index (``edgedepth.video.FrameSource``)."""
    from ..video import FrameSource

    with FrameSource(source, max_frames=max_frames) as capture:
        for frame in capture:
            yield np.ascontiguousarray(frame[..., ::-1]) if capture.color == "bgr" else frame


def _video_info(source) -> tuple[Optional[int], Optional[float]]:
    """(frame count, fps) of a video file for the progress bar and the depth video; (None, None) for
    cameras and streams (opening them twice is not free)."""
    from ..video import FrameSource

    if isinstance(source, int) or is_stream_url(str(source)) or is_gstreamer_pipeline(str(source)):
        return None, None
    with FrameSource(source) as capture:
        return capture.frame_count, capture.fps


def _expand(items: list[tuple[str, object]], skipped: list[str],
            max_frames: Optional[int] = None) -> tuple[Iterator[tuple[str, np.ndarray]], int | None]:
    """The frames of every item; an image that cannot be read is reported, added to ``skipped`` and
    passed over (one corrupt file in a folder must not cost the others)."""
    from ..depth_io import read_image

    total: int | None = 0
    for _, src in items:
        n = _video_info(src[1])[0] if isinstance(src, tuple) else 1
        if isinstance(src, tuple) and max_frames is not None:
            n = min(n or max_frames, max_frames)
        total = None if (total is None or n is None) else total + n

    def gen() -> Iterator[tuple[str, np.ndarray]]:
        for name, src in items:
            if isinstance(src, tuple):
                for i, frame in enumerate(_video_frames(src[1], max_frames)):
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


def _groups(items: list[tuple[str, object]], stabilize: str) -> list[tuple[list[tuple[str, object]], bool]]:
    """Items cut into streams, each (items, stabilised): every video/stream/camera alone, every folder
    alone, consecutive image files together. Videos are stabilised unless --stabilize off; folders and
    runs of image files are independent photos unless --stabilize on makes each one a sequence."""
    groups: list[tuple[list[tuple[str, object]], bool]] = []
    last_key = None
    for name, src in items:
        video = isinstance(src, tuple)
        key = ("video", name) if video else ("folder", name.split("/")[0]) if "/" in name else ("files",)
        if video or key != last_key:
            groups.append(([], stabilize == "on" or (stabilize == "auto" and video)))
        groups[-1][0].append((name, src))
        last_key = key
    return groups


def _write(out: Path, name: str, image: np.ndarray, depth: np.ndarray, valid: np.ndarray, intrinsics: np.ndarray,
           outputs: set[str], ply_stride: int, *, png16_unit: float = 1e-3,
           color_range: tuple[float, float] = (COLOR_NEAR, 80.0)) -> int:
    """Write one frame's files; returns the valid pixels its 16-bit PNG could not hold (written as 0)."""
    from ..depth_io import write_colorized_depth, write_depth_png, write_npy
    from ..pointcloud import write_depth_ply

    base = out / name
    base.parent.mkdir(parents=True, exist_ok=True)
    if "npy" in outputs:
        write_npy(base.with_name(base.name + ".npy"), np.where(valid, depth, np.float32(np.nan)))
    depth = np.where(valid, depth, np.float32(0))  # the image formats' "no depth"
    clipped = 0
    if "png16" in outputs:
        clipped = write_depth_png(base.with_name(base.name + "_depth16.png"), depth, png16_unit, warn=False)
    if "color" in outputs:
        write_colorized_depth(base.with_name(base.name + "_color.png"), depth, *color_range)
    if "ply" in outputs:
        write_depth_ply(base.with_name(base.name + ".ply"), depth, intrinsics, image, stride=ply_stride)
    return clipped


def _png16_unit(text: str) -> float:
    if text in PNG16_UNITS:
        return PNG16_UNITS[text]
    try:
        unit = float(text)
    except ValueError:
        unit = float("nan")
    if not (np.isfinite(unit) and unit > 0):
        raise SystemExit(f"--png16-unit must be mm, cm or a positive number of metres, got {text!r}")
    return unit


def _color_range(args: argparse.Namespace, runtime) -> tuple[float, float]:
    from ..depth_io import check_depth_range

    far = runtime.valid_max_depth if np.isfinite(runtime.valid_max_depth) else 80.0
    vmin = COLOR_NEAR if args.vmin is None else args.vmin
    vmax = far if args.vmax is None else args.vmax
    try:
        check_depth_range(vmin, vmax)
    except ValueError as err:
        raise SystemExit(f"--vmin/--vmax: {err}") from None
    return vmin, vmax


def _run_bag(args: argparse.Namespace, runtime) -> int:
    from ..ros.bag import BagOptions, convert_bag

    options = BagOptions(topic=args.topic, camera_info_topic=args.camera_info_topic, depth_topic=args.depth_topic,
                         encoding=args.encoding, pointcloud=args.pointcloud, cloud_stride=args.ply_stride,
                         stabilize=args.stabilize != "off", storage=args.storage, max_frames=args.max_frames)
    report = convert_bag(runtime, args.bag, args.out_bag, options)
    topics = ", ".join(f"{t} ({m.rsplit('/', 1)[-1]})" for t, m in report.topics.items())
    print(f"{report.frames} frame(s) -> {args.out_bag}: {topics}", file=sys.stderr)
    if report.clipped:
        print(f"edgedepth: {report.clipped} valid pixels lay beyond 65.535 m and were written as 0 (unknown) in the "
              "16UC1 images; --encoding 32FC1 keeps them", file=sys.stderr)
    return 0


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..depth_io import depth_legend, write_image
    from ..pointcloud import default_intrinsics
    from ..runtime import Runtime

    if args.bag is not None and (not args.topic or not args.out_bag or args.inputs or args.camera is not None):
        raise SystemExit("edgedepth predict --bag IN needs --topic and --out-bag, and no other input")
    if args.bag is None and not args.inputs and args.camera is None:
        raise SystemExit("edgedepth predict needs an input: images, folders, videos, stream URLs, --camera or --bag")
    if args.max_frames is not None and args.max_frames < 1:
        raise SystemExit(f"--max-frames must be >= 1, got {args.max_frames}")
    png16_unit = _png16_unit(args.png16_unit)
    items = [] if args.bag is not None else _frames(args.inputs, args.camera)
    requested = args.outputs or (VIDEO_OUTPUTS if any(isinstance(src, tuple) for _, src in items) else IMAGE_OUTPUTS)
    outputs = {o.strip() for o in requested.split(",") if o.strip()}
    unknown = outputs - set(OUTPUTS)
    if unknown or not outputs:
        raise SystemExit(f"--outputs must be a comma-separated subset of {','.join(OUTPUTS)}, got {requested!r}")
    if args.fx is not None and not args.fx > 0:
        raise SystemExit(f"--fx must be > 0 pixels, got {args.fx}")
    runtime = Runtime(args.bundle, backend=args.backend, device=args.device, precision=args.precision,
                      tiles=args.tiles, threads=args.threads)
    print(f"edgedepth: {runtime.backend_reason}, device {runtime.device}, precision {runtime.precision}, "
          f"bundle {runtime.bundle.name}", file=sys.stderr)
    if args.bag is not None:
        return _run_bag(args, runtime)
    color_range = _color_range(args, runtime)
    out = Path(args.out)
    totals: list[float] = []
    skipped: list[str] = []
    clipped = clipped_frames = 0
    try:
        for group, stabilize in _groups(items, args.stabilize):
            frames, total = _expand(group, skipped, args.max_frames)
            pending: collections.deque[tuple[str, np.ndarray]] = collections.deque()

            def feed(frames=frames, pending=pending) -> Iterator[np.ndarray]:
                # The stream needs bare frames and returns results in order: each frame's name and
                # pixels wait in this queue until its result arrives.
                for name, image in frames:
                    pending.append((name, image))
                    yield image

            video = _depth_video(out, group, outputs, args, color_range)
            try:
                for result in tqdm(runtime.stream(feed(), intrinsics=args.fx, stabilize=stabilize), total=total,
                                   unit="frame", disable=None):
                    name, image = pending.popleft()
                    h, w = image.shape[:2]
                    k = default_intrinsics(h, w, runtime.bundle.fx_norm)
                    if args.fx is not None:
                        k[0, 0] = k[1, 1] = args.fx
                    n = _write(out, name, image, result.depth, result.valid, k, outputs, args.ply_stride,
                               png16_unit=png16_unit, color_range=color_range)
                    clipped, clipped_frames = clipped + n, clipped_frames + (n > 0)
                    if video is not None:
                        video.write(result.depth, result.valid)
                    if not totals and outputs & {"color", "video"}:  # with the first frame: a failed run writes nothing
                        write_image(out / "legend.png", depth_legend(640, *color_range))
                    totals.append(result.timings["total"])
            finally:
                if video is not None:  # the frames seen so far make a whole video, even after Ctrl-C
                    video.close() if video.frames else video.abort()
    except KeyboardInterrupt:
        print(f"edgedepth: stopped by Ctrl-C after {len(totals)} frame(s)", file=sys.stderr)
    if totals:
        print(f"{len(totals)} frame(s) -> {out}/  ({np.mean(totals):.1f} ms/frame)", file=sys.stderr)
    if clipped:
        print(f"edgedepth: {clipped} valid pixels in {clipped_frames} frame(s) lay beyond {65535 * png16_unit:g} m and "
              f"were written as 0 (unknown) in the 16-bit PNGs; a coarser --png16-unit (cm: up to 655.35 m) or .npy "
              "keeps them", file=sys.stderr)
    if skipped:
        print(f"edgedepth predict: {len(skipped)} input(s) could not be read: {', '.join(skipped)}", file=sys.stderr)
        return 1
    return 0


def _depth_video(out: Path, group: list[tuple[str, object]], outputs: set[str], args: argparse.Namespace,
                 color_range: tuple[float, float]):
    """The DepthVideoWriter of a video/stream/camera (or a folder streamed as one sequence), else None."""
    if "video" not in outputs:
        return None
    from ..video import DepthVideoWriter

    name, src = group[0]
    video = isinstance(src, tuple)
    if not video and "/" not in name and args.stabilize != "on":
        raise SystemExit("--outputs video needs a video, stream, camera or folder (or image files with --stabilize on)")
    fps = (_video_info(src[1])[1] if video else None) or args.fps
    stem = name if video else name.split("/")[0] if "/" in name else "images"
    return DepthVideoWriter(out / f"{stem}_depth.mp4", fps, *color_range, legend=not args.no_legend)
