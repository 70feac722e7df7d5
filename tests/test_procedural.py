"""Procedural scenes: exact geometry on hand-built scenes, determinism, layouts, unreliable
panes, streaming, sensor degradation, the folder writer/reader round trip and the scenes CLI."""
import itertools
import math
import warnings

import numpy as np
import pytest

from edgedepth.cli import main as cli_main
from edgedepth.datasets import (FX_NORM, SensorConfig, degrade, iter_scenes, open_dataset, render_scene,
                                write_dataset, write_sample)
from edgedepth.datasets.procedural import Box, Camera, Cylinder, Plane, Scene, Sphere, render, scene_seed, street_scene
from edgedepth.datasets.textures import Material
from edgedepth.depth_io import read_pfm, write_pfm

GREY = Material("plain")


def _render(prims, h=9, w=11, **cam):
    scene = Scene(Camera(**cam), prims, ambient=0.5)
    return render(scene, h, w)


def test_geometry_is_exact_on_hand_built_scenes():
    # odd sizes: the centre pixel looks straight down the optical axis (0, 0, 1)
    wall = Plane((0.0, 0.0, 1.0), 20.0, GREY)
    _, depth, K, _ = _render([wall])
    np.testing.assert_allclose(depth, 20.0, rtol=1e-6)  # z-depth of a fronto-parallel plane is constant
    assert K[0, 0] == pytest.approx(FX_NORM * 11) and K[0, 2] == 5 and K[1, 2] == 4
    _, d, _, _ = _render([wall, Sphere((0.0, 0.0, 10.0), 1.0, GREY)])
    assert d[4, 5] == pytest.approx(9.0, rel=1e-6)
    _, d, _, _ = _render([wall, Box((0.0, 0.0, 6.0), (0.5, 0.5, 2.0), GREY)])
    assert d[4, 5] == pytest.approx(4.0, rel=1e-6)
    _, d, _, _ = _render([wall, Cylinder((0.0, 3.0, 8.0), (0.0, -1.0, 0.0), 6.0, 0.5, GREY)])
    assert d[4, 5] == pytest.approx(7.5, rel=1e-6)
    # ground plane y = 1.5 (y down): row i sees z = 1.5 fy / (i - cy)
    _, d, K, _ = _render([Plane((0.0, 1.0, 0.0), 1.5, GREY)], h=9, w=11)
    for i in range(5, 9):
        assert d[i, 3] == pytest.approx(1.5 * K[1, 1] / (i - K[1, 2]), rel=1e-5)
    assert (d[:5] == 0).all()  # at and above the horizon: no hit -> invalid
    # a picket fence lets the wall show through its gaps
    fence = Box((0.0, 0.0, 5.0), (3.0, 3.0, 0.01), GREY, slats=(0.5, 0.5))
    _, d, _, _ = _render([wall, fence], h=31, w=61)
    row = d[15]
    on_fence = np.abs(row - 5.0) < 0.02
    assert on_fence.any() and (~on_fence).any() and (row[~on_fence] == 20.0).all()


def test_camera_pitch_keeps_z_depth():
    wall = Plane((0.0, 0.0, 1.0), 10.0, GREY)
    _, d, _, _ = _render([wall], pitch=0.2)
    # looking down by 0.2 rad at a wall 10 m ahead: the centre ray hits at range 10/cos(0.2)
    assert d[4, 5] == pytest.approx(10.0 / math.cos(0.2), rel=1e-5)


def test_cast_shadows_fall_where_the_geometry_puts_them():
    # sun straight overhead (y down), a box floating 1 m above the ground, seen from above: the
    # ground right under it is in shade, the ground beside it lit, and depth is the same either way
    ground = Plane((0.0, 1.0, 0.0), 3.0, GREY)
    block = Box((0.0, 1.0, 8.0), (0.3, 0.3, 0.3), GREY)
    scene = Scene(Camera(pitch=0.0), [ground, block], sun=(0.0, -1.0, 0.0), ambient=0.3, sun_strength=0.8)
    h, w = 61, 61
    img0, d0, K, _ = render(scene, h, w)
    img1, d1, _, _ = render(scene, h, w, shadows=True)
    np.testing.assert_array_equal(d0, d1)
    assert (img1 <= img0).all()  # a shadow only takes light away
    # the ground point straight under the box: x = 0, y = 3, z = 8 -> pixel (cy + fy 3 / 8, cx)
    row = int(round(K[1, 2] + K[1, 1] * 3.0 / 8.0))
    col = int(round(K[0, 2]))
    assert d1[row, col] == pytest.approx(8.0, rel=0.05)  # it is the ground that pixel sees
    assert img1[row, col].sum() < 0.8 * img0[row, col].sum()
    # ground 2 m to the side of the box's shadow is lit as before
    side = int(round(K[0, 2] + K[0, 0] * 2.0 / 8.0))
    assert (img1[row, side] == img0[row, side]).all()
    # planes cast no shadow: with the ground alone nothing changes
    alone = Scene(Camera(), [ground], sun=(0.3, -1.0, 0.2))
    assert (render(alone, h, w, shadows=True)[0] == render(alone, h, w)[0]).all()


def test_box_hit_takes_one_origin_per_ray():
    from edgedepth.datasets.procedural import _Rays

    box = Box((0.0, 0.0, 5.0), (1.0, 0.5, 0.5), GREY, yaw=0.4)
    rng = np.random.default_rng(0)
    origins = rng.uniform(-0.5, 0.5, (7, 3)).astype(np.float32)
    d = rng.normal(0, 0.2, (7, 3)).astype(np.float32)
    d[:, 2] = 1.0
    together = box.hit(_Rays(tuple(origins.T), d[:, 0], d[:, 1], d[:, 2]))
    one_by_one = [box.hit(_Rays(tuple(float(v) for v in o), d[i:i + 1, 0], d[i:i + 1, 1], d[i:i + 1, 2]))[0]
                  for i, o in enumerate(origins)]
    np.testing.assert_allclose(together, one_by_one, rtol=1e-6)
    assert np.isfinite(together).any()


@pytest.mark.parametrize("layout", ["street", "indoor"])
def test_render_scene_with_shadows_darkens_only(layout):
    a = render_scene(11, 90, 160, layout)
    b = render_scene(11, 90, 160, layout, shadows=True)
    np.testing.assert_array_equal(a["depth"], b["depth"])
    assert (b["image"] <= a["image"]).all() and (b["image"] < a["image"]).any()


@pytest.mark.parametrize("layout", ["street", "indoor"])
def test_render_scene_contract_and_determinism(layout):
    a = render_scene(7, 48, 64, layout)
    b = render_scene(7, 48, 64, layout)
    c = render_scene(8, 48, 64, layout)
    assert a["image"].shape == (48, 64, 3) and a["image"].dtype == np.uint8
    assert a["depth"].dtype == np.float32 and a["intrinsics"].shape == (3, 3) and a["mask"] is None
    assert a["name"] == f"{layout}_00000007"
    np.testing.assert_array_equal(a["depth"], b["depth"])
    np.testing.assert_array_equal(a["image"], b["image"])
    assert not np.array_equal(a["depth"], c["depth"])
    valid = a["depth"][a["depth"] > 0]
    assert valid.size > 0.5 * a["depth"].size
    assert valid.min() >= 0.5 and valid.max() <= 80.0
    assert a["image"].std() > 5  # textured, shaded


def test_street_scenes_hold_thin_structures():
    prims = street_scene(np.random.default_rng(0)).primitives
    thin = [p for p in prims if isinstance(p, Cylinder) and p.radius <= 0.02]
    assert len(thin) >= 4  # overhead wires / twigs


def test_unreliable_panes_keep_the_depth_behind():
    for seed in range(20):
        s = render_scene(seed, 60, 80, "street", unreliable=True)
        if (~s["mask"]).sum() > 10:
            break
    else:
        pytest.fail("no visible pane in 20 street scenes")
    plain = render_scene(seed, 60, 80, "street")
    np.testing.assert_array_equal(s["depth"], plain["depth"])  # the pane is absent from depth
    pane = ~s["mask"]
    assert np.abs(s["image"][pane].astype(int) - plain["image"][pane].astype(int)).mean() > 3  # but visible


def test_far_depth_fills_the_sky_and_nothing_else():
    plain = render_scene(3, 72, 128, "street")
    far = render_scene(3, 72, 128, "street", far_depth=120.0)
    np.testing.assert_array_equal(far["image"], plain["image"])
    sky = plain["depth"] == 0
    rgb = plain["image"][sky].astype(int)
    assert sky[:10].mean() > 0.3 and rgb[:, 2].mean() > rgb[:, 0].mean() + 20  # it is the blue sky
    np.testing.assert_array_equal(far["depth"][~sky], plain["depth"][~sky])
    # everything unknown in the plain render is beyond range (nothing nearer than 0.5 m in a street)
    assert (far["depth"][sky] == 120.0).all()
    with pytest.raises(ValueError, match="far_depth"):
        render_scene(3, 8, 8, far_depth=50.0)


def test_render_scene_errors():
    with pytest.raises(ValueError, match="layout"):
        render_scene(0, 8, 8, "forest")
    with pytest.raises(ValueError, match="height and width"):
        render_scene(0, 0, 8)
    with pytest.raises(ValueError, match="seed"):
        render_scene(-1, 8, 8)


def test_iter_scenes_shards_and_streams():
    full = list(iter_scenes(3, 16, 24, count=4))
    assert [s["name"].split("_")[0] for s in full] == ["street", "indoor", "street", "indoor"]
    shard = list(iter_scenes(3, 16, 24, count=4, start=1, step=2))
    for a, b in zip(full[1::2], shard):
        np.testing.assert_array_equal(a["depth"], b["depth"])
    endless = list(itertools.islice(iter_scenes(3, 16, 24, layout="indoor"), 5))
    assert len(endless) == 5
    with pytest.raises(ValueError, match="layout"):
        next(iter_scenes(0, 8, 8, layout=["street", "moon"]))


def test_degrade_lidar_and_stereo():
    s = render_scene(2, 96, 128, "street")
    lidar = degrade(s, SensorConfig("lidar", beams=16), seed=1)
    g, d = s["depth"], lidar["depth"]
    kept = d > 0
    assert 0 < kept.sum() < 0.3 * (g > 0).sum()
    assert (g[kept] > 0).all()
    rel = np.abs(d[kept] - g[kept]) / g[kept]
    assert rel.max() < 0.06 and rel.mean() > 1e-4  # noisy, 1 % sigma
    np.testing.assert_array_equal(d, degrade(s, SensorConfig("lidar", beams=16), seed=1)["depth"])
    stereo = degrade(s, SensorConfig("stereo", edge_holes=2), seed=1)["depth"]
    assert (stereo > 0).sum() > 0.5 * (g > 0).sum()
    # holes at depth edges: no measurement beside a >10 % depth jump
    jump = np.zeros_like(g, bool)
    jump[:, :-1] = (g[:, :-1] > 0) & (g[:, 1:] > 0) & (np.maximum(g[:, :-1] / np.maximum(g[:, 1:], 1e-6), g[:, 1:] / np.maximum(g[:, :-1], 1e-6)) > 1.1)
    assert jump.any() and (stereo[jump] == 0).all()
    assert lidar["image"].shape == s["image"].shape and not np.array_equal(lidar["image"], s["image"])
    with pytest.raises(ValueError, match="kind"):
        SensorConfig("radar")
    with pytest.raises(ValueError, match="dropout"):
        SensorConfig(dropout=1.5)


@pytest.mark.parametrize("fmt", ["png", "npy"])
def test_writer_folder_reader_round_trip(tmp_path, fmt):
    samples = list(iter_scenes(5, 20, 30, count=2, unreliable=True))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert write_dataset(tmp_path, samples, depth_format=fmt, progress=False) == 2
    far = sum(int((s["depth"] > 65.535).sum()) for s in samples)
    if fmt == "png" and far:
        assert any("65.535" in str(w.message) for w in caught)
    assert not list(tmp_path.rglob("*.tmp*"))  # atomic: no temporaries left behind
    ds = open_dataset("folder", tmp_path)
    assert len(ds) == 2
    by_name = {s["name"]: s for s in samples}
    for got in ds:
        want = by_name[got["name"]]
        np.testing.assert_array_equal(got["image"], want["image"])
        np.testing.assert_array_equal(got["mask"], want["mask"])
        np.testing.assert_allclose(got["intrinsics"], want["intrinsics"])
        if fmt == "npy":
            np.testing.assert_array_equal(got["depth"], want["depth"])
        else:  # millimetre quantisation; beyond 65.535 m a 16-bit PNG cannot hold it: invalid
            fits = want["depth"] <= 65.535
            assert np.abs(got["depth"] - want["depth"])[fits].max() <= 0.0005 + 1e-6
            assert (got["depth"][~fits] == 0).all()
    with pytest.raises(ValueError, match="depth_format"):
        write_sample(tmp_path, samples[0], "exr")


def test_scenes_cli(tmp_path, capsys):
    out = tmp_path / "set"
    assert cli_main(["scenes", str(out), "--count", "3", "--size", "16x12", "--layout", "indoor",
                     "--depth-format", "npy", "--sensor", "stereo", "--seed", "5"]) == 0
    assert "wrote 3 frames" in capsys.readouterr().out
    ds = open_dataset("folder", out)
    assert len(ds) == 3 and ds[0]["depth"].shape == (12, 16)
    # each frame degraded with its own scene's seed, as iter_scenes numbers them
    for i in range(3):
        seed = scene_seed(5, i)
        want = degrade(render_scene(seed, 12, 16, "indoor"), SensorConfig("stereo"), seed=seed)["depth"]
        np.testing.assert_array_equal(ds[i]["depth"], want)
    with pytest.raises(SystemExit):
        cli_main(["scenes", str(out), "--size", "16by12"])
    lit = tmp_path / "lit"
    assert cli_main(["scenes", str(lit), "--count", "2", "--size", "96x54", "--shadows", "--seed", "5"]) == 0
    written = {s["name"]: s["image"] for s in open_dataset("folder", lit)}
    for i, layout in enumerate(["street", "indoor"]):
        want = render_scene(scene_seed(5, i), 54, 96, layout, shadows=True)
        np.testing.assert_array_equal(written[want["name"]], want["image"])
        assert (want["image"] < render_scene(scene_seed(5, i), 54, 96, layout)["image"]).any()


def test_pfm_round_trip_and_corrupt_file(tmp_path):
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    a[0, 0] = np.inf
    write_pfm(tmp_path / "d.pfm", a)
    np.testing.assert_array_equal(read_pfm(tmp_path / "d.pfm"), a)
    data = (tmp_path / "d.pfm").read_bytes()
    (tmp_path / "bad.pfm").write_bytes(data[:-8])
    with pytest.raises(ValueError, match="bad.pfm"):
        read_pfm(tmp_path / "bad.pfm")
