"""ROS 2 bags without ROS: bags written by the rosbags library (sqlite3 and MCAP; Image and
CompressedImage), converted by `edgedepth predict --bag`, read back with rosbags and checked
against REP 118 and the runtime's own depth."""
from __future__ import annotations

import re

import cv2
import numpy as np
import pytest

rosbags = pytest.importorskip("rosbags", reason="the [ros] extra is part of [test]; skipped only where Python < 3.10")
from rosbags.rosbag2 import Reader, StoragePlugin, Writer  # noqa: E402
from rosbags.typesys import Stores, get_typestore  # noqa: E402

from edgedepth import Runtime  # noqa: E402
from edgedepth.cli import main  # noqa: E402
from edgedepth.datasets.trajectory import render_trajectory  # noqa: E402
from edgedepth.pointcloud import backproject  # noqa: E402
from edgedepth.ros.messages import depth_from_image, image_to_frame  # noqa: E402

TS = get_typestore(Stores.ROS2_HUMBLE)
T = TS.types
H, W = 40, 64
K = np.array([[70.0, 0, 31.0], [0, 70.0, 20.5], [0, 0, 1]])


def _header(i):
    return T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=100 + i, nanosec=7 * i),
                                    frame_id="camera_optical")


def _camera_info():
    return T["sensor_msgs/msg/CameraInfo"](
        header=_header(0), height=H, width=W, distortion_model="plumb_bob", d=np.zeros(5), k=K.reshape(-1),
        r=np.eye(3).reshape(-1), p=np.hstack([K, np.zeros((3, 1))]).reshape(-1), binning_x=0, binning_y=0,
        roi=T["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False))


def _frames():
    return [f.sample["image"] for f in render_trajectory(6, H, W, "street", 3)]


def _write_bag(path, frames, *, kind="rgb8", storage="SQLITE3", info=True):
    with Writer(path, version=8, storage_plugin=StoragePlugin[storage]) as writer:
        msgtype = "sensor_msgs/msg/CompressedImage" if kind == "jpeg" else "sensor_msgs/msg/Image"
        topic = "/camera/image_raw" + ("/compressed" if kind == "jpeg" else "")
        images = writer.add_connection(topic, msgtype, typestore=TS)
        infos = writer.add_connection("/camera/camera_info", "sensor_msgs/msg/CameraInfo", typestore=TS) if info else None
        for i, rgb in enumerate(frames):
            t = (100 + i) * 10**9
            if infos is not None:
                writer.write(infos, t, TS.serialize_cdr(_camera_info(), "sensor_msgs/msg/CameraInfo"))
            if kind == "jpeg":
                ok, data = cv2.imencode(".png", rgb[..., ::-1])  # lossless, so the runtime's input is known
                msg = T[msgtype](header=_header(i), format="png", data=data.reshape(-1))
            else:
                pixels = rgb if kind == "rgb8" else rgb[..., ::-1].copy() if kind == "bgr8" else rgb.mean(-1).astype(np.uint8)
                msg = T[msgtype](header=_header(i), height=H, width=W, encoding=kind, is_bigendian=0,
                                 step=pixels.strides[0], data=np.ascontiguousarray(pixels).reshape(-1))
            writer.write(images, t + 1, TS.serialize_cdr(msg, msgtype))
    return topic


def _read(path):
    with Reader(path) as reader:
        out = {}
        for conn, t, raw in reader.messages():
            out.setdefault(conn.topic, []).append((t, TS.deserialize_cdr(raw, conn.msgtype), conn.msgtype))
        return out


@pytest.mark.parametrize("storage", ["SQLITE3", "MCAP"])
def test_bag_round_trip_is_rep118(tiny_bundle, tmp_path, storage, capsys):
    frames = _frames()
    topic = _write_bag(tmp_path / "in", frames, storage=storage)
    out = tmp_path / "out"
    assert main(["predict", "--bag", str(tmp_path / "in"), "--topic", topic, "--camera-info-topic",
                 "/camera/camera_info", "--out-bag", str(out), "--bundle", str(tiny_bundle), "--pointcloud",
                 "--stabilize", "off"]) == 0
    assert "3 frame(s)" in capsys.readouterr().err
    assert any(out.glob("*.mcap" if storage == "MCAP" else "*.db3"))  # the input's storage
    got = _read(out)
    assert set(got) == {"/camera/depth/image", "/camera/depth/camera_info", "/camera/depth/points"}
    rt = Runtime(tiny_bundle, backend="onnxruntime")
    for i, ((t, depth_msg, msgtype), (_, info, _), (_, cloud, _)) in enumerate(
            zip(got["/camera/depth/image"], got["/camera/depth/camera_info"], got["/camera/depth/points"])):
        assert msgtype == "sensor_msgs/msg/Image" and t == (100 + i) * 10**9 + 1  # the input's bag time
        for msg in (depth_msg, info, cloud):  # the input frame's header
            assert (msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id) == (100 + i, 7 * i,
                                                                                           "camera_optical")
        assert depth_msg.encoding == "32FC1" and depth_msg.step == 4 * W and depth_msg.is_bigendian == 0
        expected = rt.predict(frames[i], K)  # camera_info's K: metric depth for this camera's focal length
        depth = depth_from_image(depth_msg)
        np.testing.assert_array_equal(np.isnan(depth), ~expected.valid)
        np.testing.assert_allclose(depth[expected.valid], expected.depth[expected.valid], rtol=1e-6)
        np.testing.assert_array_equal(np.asarray(info.k).reshape(3, 3), K)
        names = [f.name for f in cloud.fields]
        assert names == ["x", "y", "z", "rgb"] and cloud.point_step == 16 and cloud.height == 1
        pts = np.frombuffer(bytes(cloud.data), "<f4").reshape(-1, 4)
        want, (rows, cols) = backproject(np.where(expected.valid, expected.depth, 0), K)
        np.testing.assert_allclose(pts[:, :3], want, rtol=1e-6)
        rgb = pts[:, 3].copy().view("<u4")
        np.testing.assert_array_equal((rgb >> 16) & 255, frames[i][rows, cols, 0])


@pytest.mark.parametrize("kind", ["bgr8", "mono8", "jpeg"])
def test_bag_encodings_and_16uc1(tiny_bundle, tmp_path, kind):
    frames = _frames()
    topic = _write_bag(tmp_path / "in", frames, kind=kind, info=False)
    out = tmp_path / "out"
    depth_topic = [] if kind == "jpeg" else ["--depth-topic", "/depth"]
    assert main(["predict", "--bag", str(tmp_path / "in"), "--topic", topic, "--out-bag", str(out),
                 "--bundle", str(tiny_bundle), "--encoding", "16UC1", "--stabilize", "off", *depth_topic]) == 0
    got = _read(out)
    if kind == "jpeg":  # image_transport's /camera/image_raw/compressed belongs to /camera
        assert set(got) == {"/camera/depth/image", "/camera/depth/camera_info"}
        got = {"/depth": got["/camera/depth/image"], "/camera_info": got["/camera/depth/camera_info"]}
    assert set(got) == {"/depth", "/camera_info"}
    rt = Runtime(tiny_bundle, backend="onnxruntime")
    info = got["/camera_info"][0][1]
    k = np.asarray(info.k).reshape(3, 3)  # no camera_info in the bag: the bundle's camera
    assert k[0, 0] == pytest.approx(rt.bundle.fx_norm * W) and k[0, 2] == pytest.approx((W - 1) / 2)
    for i, (_, msg, _) in enumerate(got["/depth"]):
        assert msg.encoding == "16UC1" and msg.step == 2 * W
        image = frames[i].mean(-1).astype(np.uint8) if kind == "mono8" else frames[i]
        expected = rt.predict(image, color="gray" if kind == "mono8" else "rgb")
        mm = np.frombuffer(bytes(msg.data), "<u2").reshape(H, W)
        np.testing.assert_array_equal(mm == 0, ~expected.valid)
        np.testing.assert_allclose(mm * 1e-3, np.where(expected.valid, expected.depth, 0), atol=5e-4 + 1e-6)


def test_bag_stabilised_by_default(tiny_bundle, tmp_path):
    topic = _write_bag(tmp_path / "in", _frames())
    args = ["predict", "--bag", str(tmp_path / "in"), "--topic", topic, "--bundle", str(tiny_bundle)]
    assert main([*args, "--out-bag", str(tmp_path / "on")]) == 0
    assert main([*args, "--out-bag", str(tmp_path / "off"), "--stabilize", "off"]) == 0
    on = [depth_from_image(m) for _, m, _ in _read(tmp_path / "on")["/camera/depth/image"]]
    off = [depth_from_image(m) for _, m, _ in _read(tmp_path / "off")["/camera/depth/image"]]
    np.testing.assert_array_equal(on[0], off[0])
    assert any(not np.allclose(a, b, equal_nan=True) for a, b in zip(on[1:], off[1:]))


def test_bag_errors_name_the_problem(tiny_bundle, tmp_path, capsys):
    topic = _write_bag(tmp_path / "in", _frames()[:1])
    base = ["predict", "--bag", str(tmp_path / "in"), "--bundle", str(tiny_bundle)]

    def error(*argv):  # the command's one-line message
        assert main([*base, *argv]) == 1
        return capsys.readouterr().err.strip().splitlines()[-1]

    assert re.search(r"no topic '/nope'; its topics: /camera/camera_info \(sensor_msgs/msg/CameraInfo\)",
                     error("--topic", "/nope", "--out-bag", str(tmp_path / "o1")))
    assert "carries sensor_msgs/msg/CameraInfo, not sensor_msgs/msg/Image" in error(
        "--topic", "/camera/camera_info", "--out-bag", str(tmp_path / "o2"))
    (tmp_path / "taken").mkdir()
    assert "never overwritten" in error("--topic", topic, "--out-bag", str(tmp_path / "taken"))
    with pytest.raises(SystemExit, match="needs --topic and --out-bag"):
        main([*base, "--topic", topic])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "taken"]  # nothing half-written left behind


def test_image_messages_with_padding_and_unsupported_encodings():
    rgb = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    padded = np.zeros((2, 12), np.uint8)
    padded[:, :9] = rgb.reshape(2, 9)
    msg = T["sensor_msgs/msg/Image"](header=_header(0), height=2, width=3, encoding="rgb8", is_bigendian=0, step=12,
                                     data=padded.reshape(-1))
    frame = image_to_frame(msg)
    assert frame.color == "rgb"
    np.testing.assert_array_equal(frame.image, rgb)
    mono16 = np.array([[0x1234, 0xFF00]], ">u2")
    msg16 = T["sensor_msgs/msg/Image"](header=_header(0), height=1, width=2, encoding="mono16", is_bigendian=1,
                                       step=4, data=np.frombuffer(mono16.tobytes(), np.uint8).copy())
    np.testing.assert_array_equal(image_to_frame(msg16).image, [[0x12, 0xFF]])
    yuv = T["sensor_msgs/msg/Image"](header=_header(0), height=1, width=2, encoding="yuv422", is_bigendian=0, step=4,
                                     data=np.zeros(4, np.uint8))
    with pytest.raises(ValueError, match="'yuv422' is not supported"):
        image_to_frame(yuv)
    short = T["sensor_msgs/msg/Image"](header=_header(0), height=2, width=3, encoding="rgb8", is_bigendian=0, step=9,
                                       data=np.zeros(10, np.uint8))
    with pytest.raises(ValueError, match="inconsistent"):
        image_to_frame(short)


def test_live_node_parses_its_arguments_and_names_what_it_needs(capsys):
    import importlib.util

    from edgedepth.ros.node import main as node_main, parse_args

    args = parse_args(["--image", "/camera/image_raw/compressed", "--encoding", "16UC1"])
    assert (args.image, args.encoding, args.camera_info, args.no_stabilize) == ("/camera/image_raw/compressed",
                                                                                "16UC1", None, False)
    with pytest.raises(SystemExit):
        parse_args(["--image", "/x", "--encoding", "8UC1"])
    capsys.readouterr()
    if importlib.util.find_spec("rclpy") is not None:
        pytest.skip("rclpy is installed: the node would start")
    assert node_main(["--image", "/camera/image_raw"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "needs ROS 2's rclpy" in err and "setup.bash" in err
