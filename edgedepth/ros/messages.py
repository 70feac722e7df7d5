"""ROS 2 message contents <-> numpy, for ``sensor_msgs`` Image, CompressedImage, CameraInfo and PointCloud2.

Works on any message object with the ROS 2 field names (``rosbags`` message classes in bags, ``rclpy``
messages in a live node): nothing here imports a ROS library. Depth follows REP 118: ``32FC1`` metres
with NaN where the depth is unknown, or ``16UC1`` millimetres with 0 there. Geometry lives in the
CameraInfo beside it; a PointCloud2 is in the image's own optical frame (x right, y down, z forward).
"""
from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

#: REP 118 depth encodings this module writes.
DEPTH_ENCODINGS = ("32FC1", "16UC1")
#: colour encodings read from sensor_msgs/Image -> (channels, numpy dtype, Runtime color, channel order fix).
_IMAGE_ENCODINGS = {
    "rgb8": (3, np.uint8, "rgb"), "bgr8": (3, np.uint8, "bgr"), "8UC3": (3, np.uint8, "bgr"),
    "rgba8": (4, np.uint8, "rgb"), "bgra8": (4, np.uint8, "bgr"), "8UC4": (4, np.uint8, "bgr"),
    "mono8": (1, np.uint8, "gray"), "8UC1": (1, np.uint8, "gray"),
    "mono16": (1, np.uint16, "gray"), "16UC1": (1, np.uint16, "gray"),
}
POINTFIELD_FLOAT32 = 7  # sensor_msgs/PointField.FLOAT32


class Frame(NamedTuple):
    """A camera frame as the runtime takes it: ``image`` (H, W, 3) or (H, W) uint8, ``color`` "rgb",
    "bgr" or "gray" (``Runtime.predict(image, color=color)``)."""

    image: np.ndarray
    color: str


def image_to_frame(msg: Any) -> Frame:
    """A sensor_msgs/Image (rgb8, bgr8, rgba8, bgra8, mono8, mono16, 8UC1/3/4, 16UC1) as a Frame.

    16-bit mono images (IR, thermal) keep their top 8 bits; alpha is dropped. Row padding (``step``)
    and big-endian 16-bit data are handled.
    """
    encoding = str(msg.encoding)
    if encoding not in _IMAGE_ENCODINGS:
        raise ValueError(f"image encoding {encoding!r} is not supported; use one of {', '.join(_IMAGE_ENCODINGS)}")
    channels, dtype, color = _IMAGE_ENCODINGS[encoding]
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    itemsize = np.dtype(dtype).itemsize
    data = np.frombuffer(bytes(msg.data) if not isinstance(msg.data, np.ndarray) else msg.data.tobytes(), np.uint8)
    if h < 1 or w < 1 or step < w * channels * itemsize or data.size < step * h:
        raise ValueError(f"image message of {h}x{w} {encoding} with step {step} holds {data.size} bytes: "
                         f"inconsistent (needs step >= {w * channels * itemsize} and step x height bytes)")
    rows = data[: step * h].reshape(h, step)[:, : w * channels * itemsize]
    pixels = rows.copy().view(np.dtype(dtype).newbyteorder(">" if msg.is_bigendian else "<"))
    pixels = pixels.reshape(h, w, channels) if channels > 1 else pixels.reshape(h, w)
    if dtype == np.uint16:
        pixels = (pixels.astype(np.uint16) >> 8).astype(np.uint8)
    if channels == 4:
        pixels = np.ascontiguousarray(pixels[..., :3])
    return Frame(np.ascontiguousarray(pixels), color)


def compressed_to_frame(msg: Any) -> Frame:
    """A sensor_msgs/CompressedImage (JPEG or PNG) decoded as a Frame (OpenCV: BGR; else Pillow: RGB)."""
    data = bytes(msg.data) if not isinstance(msg.data, np.ndarray) else msg.data.tobytes()
    try:
        import cv2
    except ImportError:
        cv2 = None
    if cv2 is not None:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if image is None:
            raise ValueError(f"cannot decode compressed image (format {msg.format!r}, {len(data)} bytes)")
        return Frame(image, "bgr")
    import io

    from PIL import Image

    try:
        return Frame(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).copy(), "rgb")
    except Exception as err:  # Pillow raises several types for corrupt data
        raise ValueError(f"cannot decode compressed image (format {msg.format!r}): {err}") from err


def camera_matrix(msg: Any) -> np.ndarray:
    """The 3x3 K of a sensor_msgs/CameraInfo (ValueError when it is unset, as an uncalibrated camera sends)."""
    k = np.asarray(msg.k, np.float64).reshape(3, 3)
    if not np.isfinite(k).all() or k[0, 0] <= 0 or k[1, 1] <= 0:
        raise ValueError(f"camera_info K is not a calibrated camera matrix: {k.tolist()}")
    return k


def depth_image_fields(depth: np.ndarray, valid: np.ndarray, encoding: str = "32FC1") -> tuple[dict, int]:
    """The fields of a REP 118 depth sensor_msgs/Image (all but the header) and how many valid pixels
    did not fit it (16UC1 holds up to 65.535 m; such pixels become 0 = unknown).

    depth: (H, W) float metres; valid: (H, W) bool. 32FC1: metres, NaN where not valid. 16UC1:
    millimetres rounded, 0 where not valid.
    """
    depth = np.asarray(depth, np.float32)
    valid = np.asarray(valid, bool)
    if depth.ndim != 2 or valid.shape != depth.shape:
        raise ValueError(f"depth and valid must be (H, W) of one shape, got {depth.shape} and {valid.shape}")
    h, w = depth.shape
    clipped = 0
    if encoding == "32FC1":
        data = np.where(valid, depth, np.float32(np.nan)).astype("<f4")
    elif encoding == "16UC1":
        from ..depth_io import depth_to_png16

        data, clipped = depth_to_png16(np.where(valid, depth, np.float32(0)), 1e-3)
        data = data.astype("<u2")
    else:
        raise ValueError(f"depth encoding must be one of {', '.join(DEPTH_ENCODINGS)} (REP 118), got {encoding!r}")
    fields = {"height": h, "width": w, "encoding": encoding, "is_bigendian": 0, "step": w * data.itemsize,
              "data": np.frombuffer(data.tobytes(), np.uint8)}
    return fields, clipped


def depth_from_image(msg: Any) -> np.ndarray:
    """A REP 118 depth sensor_msgs/Image as (H, W) float32 metres, NaN where unknown (16UC1's 0 too)."""
    encoding = str(msg.encoding)
    dtypes = {"32FC1": "f4", "16UC1": "u2"}
    if encoding not in dtypes:
        raise ValueError(f"depth encoding {encoding!r} is not REP 118 (32FC1 or 16UC1)")
    dtype = np.dtype(dtypes[encoding]).newbyteorder(">" if msg.is_bigendian else "<")
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    data = np.frombuffer(bytes(msg.data) if not isinstance(msg.data, np.ndarray) else msg.data.tobytes(), np.uint8)
    values = data[: step * h].reshape(h, step)[:, : w * dtype.itemsize].copy().view(dtype).reshape(h, w)
    if encoding == "16UC1":
        return np.where(values > 0, values.astype(np.float32) * np.float32(1e-3), np.float32(np.nan))
    return values.astype(np.float32)


def pointcloud_fields(points: np.ndarray, colors: np.ndarray | None = None) -> dict:
    """The fields of an unorganised sensor_msgs/PointCloud2 (all but the header and ``fields``' class):
    (N, 3) float32 metres as x, y, z and optional (N, 3) uint8 RGB packed PCL-style in a float32 ``rgb``.
    ``fields`` is a list of (name, offset, datatype, count) tuples."""
    points = np.asarray(points, np.float32)
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"points must be (N, 3), got {points.shape}")
    names = ["x", "y", "z"] + (["rgb"] if colors is not None else [])
    record = np.empty(len(points), dtype=[(n, "<f4") for n in names])
    record["x"], record["y"], record["z"] = points.T
    if colors is not None:
        c = np.asarray(colors, np.uint8)
        if c.shape != points.shape:
            raise ValueError(f"colors must be (N, 3) uint8 like points, got {c.shape}")
        packed = (c[:, 0].astype(np.uint32) << 16) | (c[:, 1].astype(np.uint32) << 8) | c[:, 2].astype(np.uint32)
        record["rgb"] = packed.view("<f4")
    step = 4 * len(names)
    return {"height": 1, "width": len(points), "is_bigendian": False, "point_step": step, "row_step": step * len(points),
            "data": np.frombuffer(record.tobytes(), np.uint8), "is_dense": True,
            "fields": [(n, 4 * i, POINTFIELD_FLOAT32, 1) for i, n in enumerate(names)]}
