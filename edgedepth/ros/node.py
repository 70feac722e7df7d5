"""A live ROS 2 node: camera images in, REP 118 depth out (for rclpy users; needs a sourced ROS 2).

    source /opt/ros/humble/setup.bash
    python -m edgedepth.ros.node --image /camera/image_raw [--camera-info /camera/camera_info]
        [--depth /camera/depth/image] [--encoding 32FC1|16UC1] [--bundle B] [--backend auto] [--no-stabilize]

It subscribes to ``--image`` (sensor_msgs/Image, or CompressedImage when the topic ends in
``/compressed``) and ``--camera-info``, and publishes, under each image's header, the depth on
``--depth`` and the camera's CameraInfo beside it (``<depth namespace>/camera_info``). Frames go one
at a time through one ``Runtime`` and its stabiliser (``Runtime.stream`` over a queue of the latest
frame: a slow model drops frames instead of falling behind), with the intrinsics of the first
CameraInfo that arrives within 2 s (else the bundle's camera). The message conversions are
``edgedepth.ros.messages``, the same the bag converter uses and tests; this file only wires them to
rclpy, which cannot run in this project's CI.
"""
from __future__ import annotations

import argparse
import queue
import sys
import threading
from typing import Optional, Sequence

from .messages import DEPTH_ENCODINGS, camera_matrix, compressed_to_frame, depth_image_fields, image_to_frame


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m edgedepth.ros.node", description=__doc__.splitlines()[0])
    p.add_argument("--image", required=True, help="image topic, e.g. /camera/image_raw (…/compressed: CompressedImage)")
    p.add_argument("--camera-info", default=None, help="CameraInfo topic (default: the image topic's sibling camera_info)")
    p.add_argument("--depth", default=None, help="depth topic (default: <image namespace>/depth/image)")
    p.add_argument("--encoding", choices=DEPTH_ENCODINGS, default="32FC1",
                   help="REP 118: 32FC1 metres with NaN unknown (default) or 16UC1 millimetres with 0 unknown")
    p.add_argument("--bundle", default=None, help="NAME.edgedepth bundle folder (default: the embedded model)")
    p.add_argument("--backend", default="auto", help="auto, onnxruntime, openvino, tensorrt, coreml or torch")
    p.add_argument("--no-stabilize", action="store_true", help="turn the temporal stabiliser off")
    return p.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    try:
        import rclpy
        from rclpy.node import Node
        from sensor_msgs.msg import CameraInfo, CompressedImage, Image
    except ImportError as err:
        print(f"edgedepth.ros.node needs ROS 2's rclpy and sensor_msgs ({err.name} is missing): "
              "source /opt/ros/<distro>/setup.bash first", file=sys.stderr)
        return 2
    from .. import Runtime

    base = args.image[: -len("/compressed")] if args.image.endswith("/compressed") else args.image
    parent = base.rstrip("/").rsplit("/", 1)[0]
    depth_topic = args.depth or f"{parent}/depth/image"
    info_out = f"{depth_topic.rsplit('/', 1)[0]}/camera_info"
    runtime = Runtime(args.bundle, backend=args.backend)
    latest: queue.Queue = queue.Queue(maxsize=1)
    state: dict = {"info": None}

    rclpy.init()
    node = Node("edgedepth")
    depth_pub = node.create_publisher(Image, depth_topic, 5)
    info_pub = node.create_publisher(CameraInfo, info_out, 5)

    have_info = threading.Event()

    def on_info(msg) -> None:
        state["info"] = msg
        have_info.set()

    def on_image(msg) -> None:
        frame = compressed_to_frame(msg) if args.image.endswith("/compressed") else image_to_frame(msg)
        try:
            latest.get_nowait()  # drop the frame nobody got to: stay live rather than fall behind
        except queue.Empty:
            pass
        latest.put((msg.header, frame))

    node.create_subscription(CompressedImage if args.image.endswith("/compressed") else Image, args.image, on_image, 5)
    node.create_subscription(CameraInfo, args.camera_info or f"{parent}/camera_info", on_info, 5)
    headers: queue.Queue = queue.Queue()

    def work() -> None:
        # One camera, one stream: its intrinsics are those of the first CameraInfo (2 s grace), else the bundle's.
        have_info.wait(timeout=2.0)
        info = state["info"]
        k = camera_matrix(info) if info is not None else None
        node.get_logger().info("intrinsics: " + ("camera_info" if info is not None else "the bundle's camera (no camera_info)"))
        first_header, first = latest.get()

        def frames():
            headers.put(first_header)
            yield first.image
            while rclpy.ok():
                header, frame = latest.get()
                headers.put(header)
                yield frame.image

        color = first.color
        for result in runtime.stream(frames(), intrinsics=k, color=color, stabilize=not args.no_stabilize):
            header = headers.get()
            fields, _ = depth_image_fields(result.depth, result.valid, args.encoding)
            fields["data"] = fields["data"].tobytes()
            depth_pub.publish(Image(header=header, **fields))
            if info is not None:
                info.header = header
                info_pub.publish(info)

    node.get_logger().info(f"{runtime.backend_reason}; {args.image} -> {depth_topic} ({args.encoding})")
    threading.Thread(target=work, daemon=True).start()
    try:
        rclpy.spin(node)
    except KeyboardInterrupt:
        pass
    finally:
        node.destroy_node()
        rclpy.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
