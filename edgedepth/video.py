"""Video in and out: frames from cameras, video files and network streams; depth written as a video.

Reading goes through OpenCV's ``cv2.VideoCapture`` (camera indices, files, RTSP/HTTP URLs, GStreamer
pipelines such as a Jetson CSI camera's ``nvarguscamerasrc ! ... ! appsink``), which hands out BGR
frames; ``FrameSource.color`` says so, and ``Runtime.stream(source, color=source.color)`` takes
them as they come. Where OpenCV is not installed (a Jetson venv without JetPack's OpenCV) files and
URLs are read with PyAV instead (``pip install 'edgedepth[video]'``), which hands out RGB.

:class:`DepthVideoWriter` writes colourised depth (the same colours as ``depth_io.colorize_depth``,
over one fixed range for the whole video, with a legend in metres) through OpenCV, under a temporary
name renamed into place when it is closed: an interrupted run never leaves a truncated file under
the final name.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Iterator, Optional, Union

import numpy as np

from .atomic import temporary_name

#: Suffixes read as video files (anything else that is a file is read as an image).
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")
_URL = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)


def is_stream_url(text: str) -> bool:
    """True for ``rtsp://``, ``http://`` ... sources (read by the video backend, not from disk)."""
    return bool(_URL.match(text))


def is_gstreamer_pipeline(text: str) -> bool:
    """True for a GStreamer pipeline description (elements joined by ``!``)."""
    return " ! " in text


def _cv2() -> Any:
    try:
        import cv2
    except ImportError:
        return None
    return cv2


class FrameSource:
    """Frames of one camera, video file or network stream, as (H, W, 3) uint8 arrays.

    color: channel order of the frames ("bgr" from OpenCV, "rgb" from PyAV): pass it on to
        ``Runtime.stream(..., color=source.color)``.
    fps: frames per second the source declares (None when it does not).
    frame_count: frames in a file, when the container says (None for cameras and streams).
    Iterating yields frames until the source ends; ``max_frames`` stops earlier. Close it (or use
    ``with``) to release a camera.
    """

    def __init__(self, source: Union[str, int, Path], *, backend: str = "auto",
                 max_frames: Optional[int] = None) -> None:
        if backend not in ("auto", "opencv", "pyav"):
            raise ValueError(f"backend must be 'auto', 'opencv' or 'pyav', got {backend!r}")
        if max_frames is not None and max_frames < 1:
            raise ValueError(f"max_frames must be >= 1 or None, got {max_frames}")
        self.source = source
        self.max_frames = max_frames
        self.name = self._describe(source)
        cv2 = _cv2() if backend in ("auto", "opencv") else None
        if backend == "opencv" and cv2 is None:
            raise ImportError("reading video with OpenCV needs it: pip install opencv-python-headless")
        self._capture: Any = None
        self._container: Any = None
        if cv2 is not None:
            self._open_opencv(cv2, source)
        else:
            self._open_pyav(source)

    @staticmethod
    def _describe(source: Union[str, int, Path]) -> str:
        if isinstance(source, int):
            return f"camera {source}"
        return str(source)

    def _open_opencv(self, cv2: Any, source: Union[str, int, Path]) -> None:
        self.color = "bgr"
        if isinstance(source, int):
            capture = cv2.VideoCapture(source)
        elif is_gstreamer_pipeline(str(source)):
            capture = cv2.VideoCapture(str(source), cv2.CAP_GSTREAMER)
        else:
            self._check_file(source)
            capture = cv2.VideoCapture(str(source))
        if not capture.isOpened():
            capture.release()
            hint = (" (is the camera connected and free? `ls /dev/video*`)" if isinstance(source, int) else
                    " (this OpenCV build has no GStreamer: use JetPack's OpenCV)" if is_gstreamer_pipeline(str(source))
                    else "")
            raise ValueError(f"cannot open video source {self.name}{hint}")
        self._capture = capture
        fps = capture.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and np.isfinite(fps) and fps > 0 else None
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self.frame_count = count if count > 0 and not isinstance(source, int) else None

    def _open_pyav(self, source: Union[str, int, Path]) -> None:
        if isinstance(source, int) or is_gstreamer_pipeline(str(source)):
            raise ImportError(f"reading {self.name} needs OpenCV: pip install opencv-python-headless "
                              "(on a Jetson: JetPack's python3-opencv)")
        try:
            import av
        except ImportError as err:
            raise ImportError(f"reading video {self.name} needs OpenCV (pip install opencv-python-headless) "
                              "or PyAV (pip install 'edgedepth[video]')") from err
        self._check_file(source)
        self.color = "rgb"
        try:
            self._container = av.open(str(source))
        except Exception as err:  # PyAV raises several types for missing/corrupt sources
            raise ValueError(f"cannot open video source {self.name}: {err}") from err
        stream = self._container.streams.video[0]
        self.fps = float(stream.average_rate) if stream.average_rate else None
        self.frame_count = int(stream.frames) or None

    @staticmethod
    def _check_file(source: Union[str, Path]) -> None:
        if not is_stream_url(str(source)) and not Path(source).is_file():
            raise FileNotFoundError(f"video file not found: {source}")

    def __iter__(self) -> Iterator[np.ndarray]:
        count = 0
        if self._capture is not None:
            while self.max_frames is None or count < self.max_frames:
                ok, frame = self._capture.read()
                if not ok:
                    return
                count += 1
                yield frame
        elif self._container is not None:
            for frame in self._container.decode(video=0):
                if self.max_frames is not None and count >= self.max_frames:
                    return
                count += 1
                yield frame.to_ndarray(format="rgb24")

    def close(self) -> None:
        """Release the camera, file or stream (idempotent)."""
        if self._capture is not None:
            self._capture.release()
            self._capture = None
        if self._container is not None:
            self._container.close()
            self._container = None

    def __enter__(self) -> "FrameSource":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class DepthVideoWriter:
    """Write depth maps as a colourised video with a fixed colour range and a legend.

    path: output file; ``.mp4`` (MPEG-4 Part 2, plays everywhere) or ``.avi`` (MJPG).
    fps: frames per second of the video.
    vmin, vmax: the colour range in metres, fixed for the whole video (near = red, far = blue, by
        inverse depth; invalid pixels black).
    legend: append a colour bar with metre ticks under every frame.
    Frames must all have the first frame's size. ``close()`` (or leaving ``with``) publishes the file;
    ``abort()`` drops it.
    """

    def __init__(self, path: Union[str, Path], fps: float, vmin: float, vmax: float, *, legend: bool = True) -> None:
        from .depth_io import check_depth_range

        cv2 = _cv2()
        if cv2 is None:
            raise ImportError("writing a depth video needs OpenCV: pip install opencv-python-headless")
        self.path = Path(path)
        codecs = {".mp4": "mp4v", ".avi": "MJPG"}
        if self.path.suffix.lower() not in codecs:
            raise ValueError(f"depth video {self.path} must end in .mp4 or .avi")
        if not (np.isfinite(fps) and fps > 0):
            raise ValueError(f"fps must be > 0, got {fps}")
        check_depth_range(vmin, vmax)
        self._cv2, self._fourcc = cv2, cv2.VideoWriter_fourcc(*codecs[self.path.suffix.lower()])
        self.fps, self.vmin, self.vmax, self.legend = float(fps), float(vmin), float(vmax), legend
        self._tmp = temporary_name(self.path)
        self._writer: Any = None
        self._size: Optional[tuple[int, int]] = None
        self.frames = 0

    def write(self, depth: np.ndarray, valid: Optional[np.ndarray] = None) -> None:
        """Append one (H, W) float depth map in metres; ``valid`` (H, W) bool marks the pixels to colour."""
        from .depth_io import colorize_depth, depth_legend

        depth = np.asarray(depth, np.float32)
        if valid is not None:
            depth = np.where(np.asarray(valid, bool), depth, np.float32(0))
        rgb = colorize_depth(depth, self.vmin, self.vmax)
        if self.legend:
            rgb = np.concatenate([rgb, depth_legend(rgb.shape[1], self.vmin, self.vmax)], axis=0)
        h, w = rgb.shape[:2]
        # 4:2:0 codecs need even sides: pad one black row/column rather than rescale
        rgb = np.pad(rgb, ((0, h % 2), (0, w % 2), (0, 0)))
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._size = rgb.shape[:2]
            self._writer = self._cv2.VideoWriter(str(self._tmp), self._fourcc, self.fps, (rgb.shape[1], rgb.shape[0]))
            if not self._writer.isOpened():
                self.abort()
                raise ValueError(f"OpenCV cannot write {self.path.suffix} video here (no encoder for it)")
        elif rgb.shape[:2] != self._size:
            raise ValueError(f"depth video {self.path}: frame of {depth.shape} differs from the first frame's size")
        self._writer.write(np.ascontiguousarray(rgb[..., ::-1]))  # OpenCV writes BGR
        self.frames += 1

    def close(self) -> None:
        """Finish the file and rename it into place (nothing is written for a video without frames)."""
        if self._writer is not None:
            self._writer.release()
            self._writer = None
            os.replace(self._tmp, self.path)

    def abort(self) -> None:
        """Stop and delete the partial file."""
        if self._writer is not None:
            self._writer.release()
            self._writer = None
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> "DepthVideoWriter":
        return self

    def __exit__(self, exc_type: Any, *rest: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
