"""Each reader on tiny files written here in that data set's exact layout; expected metric depth
worked out by hand from the format's rule."""
import json

import numpy as np
import pytest

from edgedepth.datasets import list_datasets, open_dataset
from edgedepth.depth_io import write_image, write_pfm, write_png16

H, W = 4, 6


def _image(path, value=100):
    write_image(path, np.full((H, W, 3), value, np.uint8))


def test_registry_and_errors(tmp_path):
    assert list_datasets() == ["cityscapes", "eth3d", "folder", "kitti", "middlebury2014", "unrealstereo4k"]
    with pytest.raises(ValueError, match="unknown data set kind"):
        open_dataset("nyu", tmp_path)
    with pytest.raises(FileNotFoundError, match="root not found"):
        open_dataset("folder", tmp_path / "absent")
    with pytest.raises(FileNotFoundError, match="no folder samples"):
        open_dataset("folder", tmp_path)


def _unreal(root, disp=10.0):
    scene = root / "00003"
    _image(scene / "Image0" / "00000.png")
    d = np.full((H, W), disp, np.float32)
    d[0, 0] = 0.0  # no disparity -> invalid
    (scene / "Disp0").mkdir(parents=True)
    np.save(scene / "Disp0" / "00000.npy", d)
    K = "100 0 3 0 100 2 0 0 1"
    for cam, tx in (("Extrinsics0", 0.0), ("Extrinsics1", -0.5)):
        (scene / cam).mkdir(parents=True)
        (scene / cam / "00000.txt").write_text(f"{K}\n1 0 0 {tx} 0 1 0 0 0 0 1 0\n")
    return scene


def test_unrealstereo4k(tmp_path):
    scene = _unreal(tmp_path)
    ds = open_dataset("unrealstereo4k", tmp_path)
    s = ds[0]
    assert len(ds) == 1 and s["name"] == "00003_00000"
    assert s["depth"][1, 1] == pytest.approx(0.5 * 100 / 10)  # baseline x fx / disparity = 5 m
    assert s["depth"][0, 0] == 0
    assert s["intrinsics"][0, 0] == 100
    (tmp_path / "test.txt").write_text("00003/Image0/00000.png 00003/Disp0/00000.npy\n")
    assert len(open_dataset("unrealstereo4k", tmp_path, "test")) == 1
    (scene / "Disp0" / "00000.npy").unlink()
    with pytest.raises(FileNotFoundError, match="00000.npy"):
        open_dataset("unrealstereo4k", tmp_path)


def test_middlebury2014(tmp_path):
    scene = tmp_path / "Adirondack-perfect"
    _image(scene / "im0.png")
    d = np.full((H, W), 30.0, np.float32)
    d[2, 3] = np.inf  # unknown disparity
    write_pfm(scene / "disp0.pfm", d)
    (scene / "calib.txt").write_text(
        "cam0=[200 0 3; 0 200 2; 0 0 1]\ncam1=[200 0 13; 0 200 2; 0 0 1]\ndoffs=10\nbaseline=100\n"
        f"width={W}\nheight={H}\nndisp=64\n")
    s = open_dataset("middlebury2014", tmp_path)[0]
    assert s["depth"][0, 0] == pytest.approx(100 * 200 / (30 + 10) / 1000)  # 0.5 m
    assert s["depth"][2, 3] == 0 and s["name"] == "Adirondack-perfect"
    assert len(open_dataset("middlebury2014", tmp_path, "perfect")) == 1
    (scene / "disp0.pfm").write_bytes(b"Pf\n6 4\n-1.0\n" + b"\0" * 10)  # truncated
    with pytest.raises(ValueError, match="disp0.pfm"):
        open_dataset("middlebury2014", tmp_path)[0]
    (scene / "calib.txt").write_text("cam0=[200 0 3; 0 200 2; 0 0 1]\n")
    with pytest.raises(ValueError, match="calib.txt.*doffs"):
        open_dataset("middlebury2014", tmp_path)[0]


def test_eth3d(tmp_path):
    scene = tmp_path / "courtyard"
    _image(scene / "images" / "dslr_images_undistorted" / "DSC_0286.JPG")
    depth = np.full((H, W), 7.25, np.float32)
    depth[3, 5] = np.inf
    gt = scene / "ground_truth_depth" / "dslr_images" / "DSC_0286.JPG"
    gt.parent.mkdir(parents=True)
    depth.astype("<f4").tofile(gt)
    calib = scene / "dslr_calibration_undistorted"
    calib.mkdir()
    (calib / "cameras.txt").write_text("# Camera list\n0 PINHOLE 6 4 3000.5 3001.5 3 2\n")
    (calib / "images.txt").write_text("# Image list\n1 1 0 0 0 0 0 0 0 dslr_images_undistorted/DSC_0286.JPG\n\n")
    s = open_dataset("eth3d", tmp_path)[0]
    assert s["depth"][0, 0] == pytest.approx(7.25) and s["depth"][3, 5] == 0
    assert s["intrinsics"][0, 0] == 3000.5 and s["intrinsics"][1, 1] == 3001.5
    assert s["name"] == "courtyard_DSC_0286"
    depth[:2].astype("<f4").tofile(gt)  # wrong size
    with pytest.raises(ValueError, match="DSC_0286.JPG"):
        open_dataset("eth3d", tmp_path)[0]


def test_cityscapes(tmp_path):
    stem = "frankfurt_000000_000294"
    _image(tmp_path / "leftImg8bit" / "val" / "frankfurt" / f"{stem}_leftImg8bit.png")
    p = np.full((H, W), 2561, np.uint16)  # d = (2561 - 1) / 256 = 10 px
    p[0, 0] = 0  # invalid
    p[0, 1] = 1  # d = 0 -> invalid
    write_png16(tmp_path / "disparity" / "val" / "frankfurt" / f"{stem}_disparity.png", p)
    cam = tmp_path / "camera" / "val" / "frankfurt" / f"{stem}_camera.json"
    cam.parent.mkdir(parents=True)
    cam.write_text(json.dumps({"extrinsic": {"baseline": 0.2, "pitch": 0.03}, "intrinsic": {"fx": 1000.0, "fy": 1000.0, "u0": 3.0, "v0": 2.0}}))
    s = open_dataset("cityscapes", tmp_path)[0]
    assert s["depth"][1, 1] == pytest.approx(0.2 * 1000 / 10)  # 20 m
    assert s["depth"][0, 0] == 0 and s["depth"][0, 1] == 0
    cam.write_text('{"intrinsic": {}}')
    with pytest.raises(ValueError, match="camera.json"):
        open_dataset("cityscapes", tmp_path)[0]


def test_kitti_depth_selection(tmp_path):
    base = tmp_path / "depth_selection" / "val_selection_cropped"
    name = "2011_09_26_drive_0002_sync_image_0000000005_image_02"
    _image(base / "image" / f"{name}.png")
    v = np.full((H, W), 2560, np.uint16)  # 2560 / 256 = 10 m
    v[1, 2] = 0
    write_png16(base / "groundtruth_depth" / "2011_09_26_drive_0002_sync_groundtruth_depth_0000000005_image_02.png", v)
    (base / "intrinsics").mkdir()
    (base / "intrinsics" / f"{name}.txt").write_text("721.5 0 3 0 721.5 2 0 0 1")
    s = open_dataset("kitti", tmp_path)[0]
    assert s["depth"][0, 0] == pytest.approx(10.0) and s["depth"][1, 2] == 0
    assert s["intrinsics"][0, 0] == pytest.approx(721.5)
    write_image(base / "groundtruth_depth" / "2011_09_26_drive_0002_sync_groundtruth_depth_0000000005_image_02.png",
                np.zeros((H, W, 3), np.uint8))  # 8-bit, not 16-bit
    with pytest.raises(ValueError, match="16-bit"):
        open_dataset("kitti", tmp_path)[0]


def test_folder_reader_checks(tmp_path):
    _image(tmp_path / "images" / "a.png")
    with pytest.raises(FileNotFoundError, match="a.npy"):
        open_dataset("folder", tmp_path)
    (tmp_path / "depth").mkdir()
    np.save(tmp_path / "depth" / "a.npy", np.full((H, W), 2.0, np.float32))
    (tmp_path / "intrinsics").mkdir()
    (tmp_path / "intrinsics" / "a.json").write_text(json.dumps({"fx": 5, "fy": 6, "cx": 1, "cy": 2}))
    ds = open_dataset("folder", tmp_path)
    assert ds[0]["intrinsics"][1, 1] == 6 and ds[-1]["name"] == "a"
    with pytest.raises(IndexError):
        ds[1]
    np.save(tmp_path / "depth" / "a.npy", np.full((H, W), np.nan, np.float32))
    with pytest.raises(ValueError, match="a.npy"):
        ds[0]
    (tmp_path / "images" / "a.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="a.png"):
        ds[0]


def test_maps_of_another_size_than_the_image_are_named(tmp_path):
    _image(tmp_path / "images" / "a.png")
    (tmp_path / "depth").mkdir()
    np.save(tmp_path / "depth" / "a.npy", np.full((H, W + 1), 2.0, np.float32))
    ds = open_dataset("folder", tmp_path)
    with pytest.raises(ValueError, match=r"a\.npy: depth shape \(4, 7\) != image shape \(4, 6\)"):
        ds[0]
    np.save(tmp_path / "depth" / "a.npy", np.full((H, W), 2.0, np.float32))
    write_image(tmp_path / "mask" / "a.png", np.full((H + 1, W, 3), 255, np.uint8))
    ds = open_dataset("folder", tmp_path)  # the mask is found when the folder is scanned
    with pytest.raises(ValueError, match=r"a\.png: mask shape \(5, 6\) != image shape \(4, 6\)"):
        ds[0]
