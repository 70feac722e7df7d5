"""ROS 2 bags in, REP 118 depth bags out, without a ROS install (the pure-Python ``rosbags`` library).

``convert_bag`` reads the ``sensor_msgs/Image`` or ``sensor_msgs/CompressedImage`` frames of one
topic of a ROS 2 bag (sqlite3 or MCAP storage), runs them through ``Runtime.stream`` in bag order
with the camera's intrinsics from its ``sensor_msgs/CameraInfo`` topic, and writes a new bag with,
per frame and under the input frame's header (stamp and frame id) and bag time:

* ``DEPTH_TOPIC`` (default ``<camera namespace>/depth/image``): a REP 118 depth image, ``32FC1``
  metres with NaN where the depth is unknown, or ``16UC1`` millimetres with 0 there;
* ``DEPTH_TOPIC``'s sibling ``camera_info``: the input camera's CameraInfo (the depth is registered
  to the input image), or the bundle's training camera when the bag has none;
* optionally ``DEPTH_TOPIC``'s sibling ``points``: a ``sensor_msgs/PointCloud2`` of the known pixels
  (x, y, z in metres in the image's optical frame, PCL-packed ``rgb``), back-projected with K alone:
  feed rectified images (``image_rect``) when the lens distorts.

The output bag is built under a temporary name beside it and renamed into place when complete; an
existing bag is never overwritten. Needs ``pip install 'edgedepth[ros]'``.
"""
from __future__ import annotations

import os
import shutil
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np

from ..atomic import make_staging_dir
from .messages import (DEPTH_ENCODINGS, Frame, camera_matrix, compressed_to_frame, depth_image_fields,
                       image_to_frame, pointcloud_fields)

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
POINTCLOUD = "sensor_msgs/msg/PointCloud2"
STORAGES = ("sqlite3", "mcap")


@dataclass
class BagOptions:
    """What ``convert_bag`` reads and writes.

    topic: the image topic (sensor_msgs/Image or CompressedImage), e.g. ``/camera/image_raw``.
    camera_info_topic: its sensor_msgs/CameraInfo topic; None = the topic's sibling ``camera_info``
        when the bag has it, else the bundle's training camera (principal point at the centre).
    depth_topic: where the depth goes; None = ``<namespace of topic>/depth/image``.
    encoding: "32FC1" (metres, NaN unknown) or "16UC1" (millimetres, 0 unknown; 65.535 m at most).
    pointcloud: also write ``<depth namespace>/points``; ``cloud_stride`` keeps every N-th pixel.
    stabilize: the temporal stabiliser of ``Runtime.stream`` (a bag is a video).
    storage: "sqlite3" or "mcap"; None = the input bag's.
    max_frames: stop after this many frames (None = all).
    """

    topic: str
    camera_info_topic: Optional[str] = None
    depth_topic: Optional[str] = None
    encoding: str = "32FC1"
    pointcloud: bool = False
    cloud_stride: int = 1
    stabilize: bool = True
    storage: Optional[str] = None
    max_frames: Optional[int] = None


@dataclass
class BagReport:
    """What ``convert_bag`` wrote: frames, valid pixels that did not fit 16UC1, topic -> message type."""

    frames: int = 0
    clipped: int = 0
    topics: dict[str, str] = field(default_factory=dict)


def _rosbags():
    try:
        from rosbags.rosbag2 import Reader, StoragePlugin, Writer
        from rosbags.typesys import Stores, get_typestore
    except ImportError as err:
        raise ImportError("reading and writing ROS 2 bags needs rosbags: pip install 'edgedepth[ros]'") from err
    return Reader, Writer, StoragePlugin, get_typestore(Stores.LATEST)


def _sibling(topic: str, name: str) -> str:
    """``name`` beside ``topic``: /camera/image_raw -> /camera/NAME (image_transport's
    /camera/image_raw/compressed counts as /camera/image_raw)."""
    topic = topic.rstrip("/")
    if topic.endswith("/compressed"):
        topic = topic[: -len("/compressed")]
    return f"{topic.rsplit('/', 1)[0]}/{name}"


def _storage_of(path: Path) -> str:
    if path.is_dir():
        return "mcap" if any(path.glob("*.mcap")) else "sqlite3"
    return "mcap" if path.suffix == ".mcap" else "sqlite3"


def convert_bag(runtime: Any, src: str | Path, dst: str | Path, options: BagOptions, *,
                progress: bool = True) -> BagReport:
    """Depth for every frame of ``options.topic`` in bag ``src``, written as the new bag ``dst``
    (module docstring). ``runtime`` is an ``edgedepth.Runtime``. Returns a BagReport."""
    Reader, Writer, StoragePlugin, typestore = _rosbags()
    src, dst = Path(src), Path(dst)
    if options.encoding not in DEPTH_ENCODINGS:
        raise ValueError(f"depth encoding must be one of {', '.join(DEPTH_ENCODINGS)} (REP 118), got {options.encoding!r}")
    if options.storage is not None and options.storage not in STORAGES:
        raise ValueError(f"storage must be one of {', '.join(STORAGES)}, got {options.storage!r}")
    if not isinstance(options.cloud_stride, int) or options.cloud_stride < 1:
        raise ValueError(f"cloud_stride must be a positive integer, got {options.cloud_stride!r}")
    if dst.exists():
        raise FileExistsError(f"output bag {dst} exists already; choose a new name (bags are never overwritten)")
    if not src.exists():
        raise FileNotFoundError(f"bag not found: {src}")
    depth_topic = options.depth_topic or _sibling(options.topic, "depth/image")
    info_topic = _sibling(depth_topic, "camera_info")
    points_topic = _sibling(depth_topic, "points")
    storage = options.storage or _storage_of(src)
    report = BagReport()
    with Reader(src) as reader:
        topics = {c.topic: c.msgtype for c in reader.connections}
        images = [c for c in reader.connections if c.topic == options.topic]
        if not images:
            raise ValueError(f"bag {src} has no topic {options.topic!r}; its topics: "
                             + ", ".join(f"{t} ({m})" for t, m in sorted(topics.items())))
        msgtype = images[0].msgtype
        if msgtype not in (IMAGE, COMPRESSED):
            raise ValueError(f"topic {options.topic} carries {msgtype}, not {IMAGE} or {COMPRESSED}")
        camera_info = _camera_info(reader, typestore, options, topics)
        staging = make_staging_dir(dst)
        try:
            with Writer(staging / dst.name, version=8, storage_plugin=StoragePlugin[storage.upper()]) as writer:
                out = {"depth": writer.add_connection(depth_topic, IMAGE, typestore=typestore),
                       "info": writer.add_connection(info_topic, CAMERA_INFO, typestore=typestore)}
                report.topics = {depth_topic: IMAGE, info_topic: CAMERA_INFO}
                if options.pointcloud:
                    out["points"] = writer.add_connection(points_topic, POINTCLOUD, typestore=typestore)
                    report.topics[points_topic] = POINTCLOUD
                _run(runtime, reader, images, typestore, camera_info, options, writer, out, report, progress)
            os.replace(staging / dst.name, dst)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return report


def _camera_info(reader: Any, typestore: Any, options: BagOptions, topics: dict[str, str]) -> Optional[Any]:
    """The first CameraInfo of the camera, or None when the bag has none (and none was asked for)."""
    topic = options.camera_info_topic or _sibling(options.topic, "camera_info")
    if topic not in topics:
        if options.camera_info_topic is not None:
            raise ValueError(f"bag has no camera_info topic {topic!r}; its topics: {', '.join(sorted(topics))}")
        return None
    if topics[topic] != CAMERA_INFO:
        raise ValueError(f"topic {topic} carries {topics[topic]}, not {CAMERA_INFO}")
    for connection, _, raw in reader.messages(connections=[c for c in reader.connections if c.topic == topic]):
        return typestore.deserialize_cdr(raw, connection.msgtype)
    raise ValueError(f"camera_info topic {topic} holds no message")


def _run(runtime: Any, reader: Any, images: list, typestore: Any, camera_info: Optional[Any], options: BagOptions,
         writer: Any, out: dict, report: BagReport, progress: bool) -> None:
    from tqdm import tqdm

    from ..pointcloud import backproject, default_intrinsics

    T = typestore.types
    pending: deque = deque()  # (bag time, header, frame) of the frames inside the stream
    colors: list[str] = []
    k_given = camera_matrix(camera_info) if camera_info is not None else None

    def frames() -> Iterator[np.ndarray]:
        for n, (connection, timestamp, raw) in enumerate(reader.messages(connections=images)):
            if options.max_frames is not None and n >= options.max_frames:
                return
            msg = typestore.deserialize_cdr(raw, connection.msgtype)
            frame: Frame = compressed_to_frame(msg) if connection.msgtype == COMPRESSED else image_to_frame(msg)
            if colors and frame.color != colors[0]:
                raise ValueError(f"topic {options.topic} changes from {colors[0]} to {frame.color} frames mid-bag")
            colors.append(frame.color)
            pending.append((timestamp, msg.header, frame))
            yield frame.image

    source = frames()
    first = next(source, None)
    if first is None:
        raise ValueError(f"topic {options.topic} holds no message")
    h, w = first.shape[:2]
    k = k_given if k_given is not None else default_intrinsics(h, w, runtime.bundle.fx_norm)
    info = camera_info if camera_info is not None else _synthetic_info(T, k, h, w)

    def everything() -> Iterator[np.ndarray]:
        yield first
        yield from source

    total = sum(c.msgcount for c in images)
    if options.max_frames is not None:
        total = min(total, options.max_frames)
    results = runtime.stream(everything(), intrinsics=k, color=colors[0], stabilize=options.stabilize)
    for result in tqdm(results, total=total, unit="frame", disable=not progress or None):
        timestamp, header, frame = pending.popleft()
        fields, clipped = depth_image_fields(result.depth, result.valid, options.encoding)
        report.clipped += clipped
        writer.write(out["depth"], timestamp, typestore.serialize_cdr(T[IMAGE](header=header, **fields), IMAGE))
        writer.write(out["info"], timestamp,
                     typestore.serialize_cdr(_with_header(info, header), CAMERA_INFO))
        if "points" in out:
            depth = np.where(result.valid, result.depth, np.float32(0))
            points, (rows, cols) = backproject(depth, k, options.cloud_stride)
            rgb = _rgb(frame)[rows, cols]
            cloud = pointcloud_fields(points, rgb)
            cloud["fields"] = [T["sensor_msgs/msg/PointField"](name=n, offset=o, datatype=d, count=c)
                               for n, o, d, c in cloud["fields"]]
            writer.write(out["points"], timestamp, typestore.serialize_cdr(T[POINTCLOUD](header=header, **cloud),
                                                                            POINTCLOUD))
        report.frames += 1


def _rgb(frame: Frame) -> np.ndarray:
    if frame.color == "bgr":
        return frame.image[..., ::-1]
    if frame.color == "gray":
        return np.repeat(frame.image[..., None], 3, axis=2)
    return frame.image


def _with_header(info: Any, header: Any) -> Any:
    import dataclasses

    return dataclasses.replace(info, header=header)


def _synthetic_info(T: dict, k: np.ndarray, h: int, w: int) -> Any:
    """A CameraInfo for a camera the bag does not describe: the bundle's pinhole camera, no distortion."""
    p = np.zeros((3, 4))
    p[:, :3] = k
    zero_time = T["builtin_interfaces/msg/Time"](sec=0, nanosec=0)
    return T[CAMERA_INFO](
        header=T["std_msgs/msg/Header"](stamp=zero_time, frame_id=""), height=h, width=w,
        distortion_model="plumb_bob", d=np.zeros(5), k=k.reshape(-1).astype(np.float64),
        r=np.eye(3).reshape(-1), p=p.reshape(-1), binning_x=0, binning_y=0,
        roi=T["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False))
