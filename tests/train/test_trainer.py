"""The trainer on real registry models and real procedural frames, tiny sizes."""
from __future__ import annotations

import json
import time

from pathlib import Path

import numpy as np
import pytest
import torch

from edgedepth import tiling
from edgedepth.train.checkpoint import load_models
from edgedepth.train.config import load_config, runtime_grid
from edgedepth.train.data import ProceduralFrames, mirror_boxes
from edgedepth.train.stages.refiner import build_refiner
from edgedepth.train.trainer import Trainer, param_groups, read_metrics

CONFIGS = Path(__file__).parent / "configs"


def cfg_for(name, tmp_path, **over):
    sets = [f"train.out_dir={tmp_path / name}"] + [f"{k}={v}" for k, v in over.items()]
    return load_config(CONFIGS / f"tiny-{name}.yaml", sets)


def flipped_batch(items, flip: bool, n: int = 2):
    """The first ``n`` items whose seeded flip is ``flip``, and their batch: (indices, batch)."""
    chosen = []
    for i in range(40):
        with_flip = items.hflip
        items.hflip = False
        plain = items[i]
        items.hflip = with_flip
        if (not torch.equal(items[i]["coarse_image"], plain["coarse_image"])) == flip:
            chosen.append(i)
        if len(chosen) == n:
            break
    return chosen, {k: torch.stack([items[i][k] for i in chosen]) for k in items[0]}


def vary_coarse(stage):
    """An untrained coarse model reads one depth everywhere (its head starts at zero), so crops of
    its map would all agree whatever box they took: give its weights noise, so its map has steps."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in stage.coarse.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.3)


@pytest.fixture(scope="module")
def coarse_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("coarse")
    cfg = cfg_for("coarse", tmp, **{"train.tensorboard": "true"})
    metrics = Trainer(cfg, resume="never").fit()
    return tmp / "coarse", metrics


def test_coarse_run_writes_metrics_checkpoints_and_a_loadable_model(coarse_run):
    run, metrics = coarse_run
    rows = read_metrics(run / "train.csv")
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert all(np.isfinite(r["train/loss"]) for r in rows)
    assert [r["step"] for r in read_metrics(run / "val.csv")] == [3, 6]
    assert {"val/absrel", "val/delta1", "val/rmse", "val/edge_absrel"} <= set(metrics)
    assert sorted(p.name for p in (run / "checkpoints").glob("step_*")) == ["step_00000003", "step_00000006"]
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert not (run / "data.json").exists()  # the endless procedural stream has no frame count
    coarse, refiner, meta = load_models(run / "final")
    assert refiner is None and meta["train"]["stage"] == "coarse" and meta["camera"]["fx_norm"] == 0.8
    fresh = load_config(CONFIGS / "tiny-coarse.yaml")
    from edgedepth.train.models import create_coarse

    torch.manual_seed(fresh.train.seed)
    init = create_coarse(fresh.model.coarse, **fresh.model.coarse_kwargs)
    changed = [n for (n, a), b in zip(coarse.state_dict().items(), init.state_dict().values())
               if a.is_floating_point() and not torch.equal(a, b)]
    assert changed, "training changed no weight"


def test_a_run_on_shard_folders_says_how_many_frames_it_trains_on(tmp_path, capsys):
    # A shard folder holding 16 frames where its config's comment said 640 once trained a whole
    # refiner before anyone noticed: the count is now printed when training starts and kept.
    from edgedepth.train.shards import render_shards

    a = render_shards(tmp_path / "a", 3, (64, 96), seed=5, shard_size=2, workers=1, progress=False)
    b = render_shards(tmp_path / "b", 2, (64, 96), seed=6, shard_size=2, workers=1, progress=False)
    cfg = cfg_for("coarse", tmp_path, **{"data.shards": f"[{a}, {b}]", "train.steps": 2, "train.val_every": 2,
                                         "train.ckpt_every": 2})
    Trainer(cfg, resume="never").fit()
    data = json.loads((tmp_path / "coarse" / "data.json").read_text())
    assert data["frames"] == 5 and [p["frames"] for p in data["parts"]] == [3, 2]
    assert data["parts"][0]["source"] == str(a) and data["parts"][1]["frame_size"] == [64, 96]
    assert data["visits_per_frame"] == 0.8  # 2 steps of 2 frames over 5
    assert f"5 training frames ({a} 3 at 96x64, {b} 2 at 96x64)" in capsys.readouterr().out


def test_shard_folders_with_cast_shadows(tmp_path):
    from edgedepth.train.shards import ShardFrames, render_shards, shard_folder_meta

    plain = render_shards(tmp_path / "plain", 2, (48, 80), seed=5, shard_size=2, workers=1, progress=False)
    lit = render_shards(tmp_path / "lit", 2, (48, 80), seed=5, shard_size=2, workers=1, progress=False,
                        shadows=True)
    assert "shadows" not in shard_folder_meta(plain)  # folders rendered before the option still resume
    assert shard_folder_meta(lit)["shadows"] is True
    a, b = ShardFrames([plain]), ShardFrames([lit])
    for i in range(2):
        np.testing.assert_array_equal(a.frame(i)["depth"], b.frame(i)["depth"])
        assert (b.frame(i)["image"] <= a.frame(i)["image"]).all()
    assert any((b.frame(i)["image"] < a.frame(i)["image"]).any() for i in range(2))
    with pytest.raises(ValueError, match="other settings"):
        render_shards(lit, 2, (48, 80), seed=5, shard_size=2, workers=1, progress=False)


def test_encoder_gets_a_tenth_of_the_learning_rate(tmp_path):
    cfg = cfg_for("refiner", tmp_path, **{"optim.lr": "1.0e-3", "optim.encoder_lr_mult": "0.1"})
    trainer = Trainer(cfg, resume="never")
    groups = {g["name"]: g for g in trainer.optimizer.param_groups}
    assert groups["encoder"]["lr"] == pytest.approx(1e-4) and groups["head"]["lr"] == pytest.approx(1e-3)
    assert groups["head/no_decay"]["weight_decay"] == 0.0
    enc = {id(p) for p in trainer.stage.refiner.encoder_parameters()}
    assert {id(p) for p in groups["encoder"]["params"]} | {id(p) for p in groups["encoder/no_decay"]["params"]} == enc
    n = sum(len(g["params"]) for g in param_groups(trainer.stage.refiner, 1.0, 0.0, 0.1))
    assert n == len(list(trainer.stage.refiner.parameters()))


@pytest.mark.parametrize("flip", [False, True])
def test_training_tiles_equal_the_runtime_crops(tmp_path, flip):
    """The refiner sees in training exactly what the runtime's tile engine gives it (flipped items:
    exactly what it gives for the flipped frame)."""
    cfg = cfg_for("refiner", tmp_path)
    stage = Trainer(cfg, resume="never").stage
    vary_coarse(stage)
    frames = ProceduralFrames(cfg.data.frame_size, cfg.data.layouts, seed=3)
    items = stage.items(frames)
    chosen, batch = flipped_batch(items, flip)
    tiles = stage.cut_tiles(batch)
    assert float(tiles.coarse.std()) > 1.0  # depth crops that could disagree
    grid = runtime_grid(cfg)
    coarse = stage.coarse
    th, tw = cfg.model.tile_size
    for b, i in enumerate(chosen):
        image = frames.frame(i)["image"]
        if flip:
            image = np.ascontiguousarray(image[:, ::-1])
        x = tiling.crop_resize(image, np.array([[0, 0, *image.shape[:2]]], float), coarse.input_size,
                               mean=coarse.mean, std=coarse.std)
        np.testing.assert_allclose(batch["coarse_image"][b].numpy(), x[0], atol=2e-5)
        with torch.no_grad():
            cdepth, feats = coarse(torch.from_numpy(x))
        cd = cdepth[0].numpy()
        boxes = batch["boxes"][b].numpy()
        assert all(any(np.array_equal(bx, gb) for gb in grid.boxes) for bx in boxes)  # tiles of the runtime grid
        for j, box in enumerate(boxes):
            n = b * 4 + j
            rgb = tiling.crop_resize(image, box[None], (th, tw), mean=coarse.mean, std=coarse.std)
            np.testing.assert_allclose(tiles.rgb[n].numpy(), rgb[0], atol=2e-5)
            sy, sx = cd.shape[1] / image.shape[0], cd.shape[2] / image.shape[1]
            dep = tiling.crop_resize(cd, box[None] * [sy, sx, sy, sx], (th, tw))
            np.testing.assert_allclose(tiles.coarse[n].numpy(), dep[0], rtol=1e-4, atol=1e-4)
            for k, (c, gh, gw) in enumerate(stage.refiner.guidance):
                f = feats[stage.refiner.guide_indices[k]][0].numpy()
                fy, fx = f.shape[1] / image.shape[0], f.shape[2] / image.shape[1]
                g = tiling.crop_resize(f, box[None] * [fy, fx, fy, fx], (gh, gw))
                np.testing.assert_allclose(tiles.guidance[k][n].numpy(), g[0], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("cols", [3, 1])  # the tiny config's 2x3 grid; 2x1
def test_training_tiles_of_a_frame_of_another_aspect_equal_the_runtime_feeds(tmp_path, flip, cols):
    """A 4:3 frame (the coarse input is 3:2) keeps its proportions in the coarse input in training
    as at run time (coarse.fit pad): the coarse input, the depth and feature crops are the runtime's
    feeds for the same tiles, and the ground truth is divided by the width share the runtime
    multiplies the refined depth by. A grid one tile wide (a 640x480 frame's 2x1) trains as a group
    of its two tiles, each twice."""
    from edgedepth.coarse_fit import CoarseFit
    from edgedepth.train.pipeline import coarse_input, frame_feeds, refiner_input_names

    over = {} if cols > 1 else {"tiling.rows": 2, "tiling.cols": 1, "model.tile_size": "[32, 96]"}
    cfg = cfg_for("refiner", tmp_path, **over)
    stage = Trainer(cfg, resume="never").stage
    vary_coarse(stage)
    assert stage.coarse_fit(stage.coarse) == "pad"  # trained on frames of the input's aspect
    frames = ProceduralFrames((72, 96), cfg.data.layouts, seed=3)
    where = CoarseFit.for_frame(72, 96, stage.coarse.input_size, "pad")
    assert where.padded and where.width_share < 1
    items = stage.items(frames)
    chosen, batch = flipped_batch(items, flip)
    tiles = stage.cut_tiles(batch)
    coarse, refiner = stage.coarse, stage.refiner
    names = refiner_input_names(refiner)
    for b, i in enumerate(chosen):
        f = frames.frame(i)
        image, depth = f["image"], f["depth"]
        if flip:
            image, depth = np.ascontiguousarray(image[:, ::-1]), np.ascontiguousarray(depth[:, ::-1])
        np.testing.assert_allclose(batch["coarse_image"][b].numpy(), coarse_input(image, coarse, "pad")[0], atol=2e-5)
        grid = cfg.tiling.grid(72, 96, cfg.model.tile_size)
        feeds, _, _ = frame_feeds(coarse, refiner, image, grid, fit="pad")
        ids = [next(k for k, gb in enumerate(grid.boxes) if np.array_equal(bx, gb)) for bx in batch["boxes"][b].numpy()]
        if cols == 1:
            assert ids == [ids[0], ids[0], ids[2], ids[2]] and ids[0] != ids[2]
        for j, k in enumerate(ids):
            n = b * 4 + j
            np.testing.assert_allclose(tiles.coarse[n].numpy(), feeds[names[1]][k], rtol=1e-4, atol=1e-4)
            for g in range(len(refiner.guidance)):
                np.testing.assert_allclose(tiles.guidance[g][n].numpy(), feeds[f"guide{g}"][k], rtol=1e-4, atol=1e-4)
            gt = tiling.crop_resize(np.ascontiguousarray(depth, np.float32)[None], grid.boxes[k][None],
                                    tuple(cfg.model.tile_size))[0]
            ok = tiles.valid[n].numpy()
            np.testing.assert_allclose(tiles.gt[n].numpy()[ok], gt[ok] / where.width_share, rtol=1e-5)
    assert float(stage.train_step(refiner, batch)[0].detach()) > 0  # and it trains


def test_the_item_fields_read_on_the_host_stay_there(tmp_path):
    """Boxes and frame sizes feed crop tables on the host: a field the trainer moved to a GPU would
    come back with a synchronisation per crop, every step."""
    from edgedepth.train.trainer import HOST_KEYS

    cfg = cfg_for("refiner", tmp_path)
    item = Trainer(cfg, resume="never").stage.items(ProceduralFrames((72, 96), cfg.data.layouts, seed=3))[0]
    assert {k for k in item if k.endswith(("boxes", "_hw"))} == {"boxes", "frame_hw", "coarse_boxes", "coarse_hw"}
    assert {k for k in item if k.endswith(("boxes", "_hw"))} <= HOST_KEYS


def test_tile_groups_of_narrow_grids():
    from edgedepth.train.data import group_ids

    assert group_ids(3, 4, 1, 2) == [6, 7, 10, 11]
    assert group_ids(2, 1, 0, 0) == [0, 0, 1, 1]
    assert group_ids(1, 3, 0, 1) == [1, 2, 1, 2]


def test_every_epoch_cuts_each_frame_anew(tmp_path):
    """Finite data sets: the sampler's visits cover every frame once per epoch, resume where they
    left off, and an item's tile group and flip come from the visit, not the frame alone (a 1080p
    shard frame used to give the same 4 of its 16 tiles every epoch)."""
    from edgedepth.train.data import StepBatchSampler
    from edgedepth.train.distributed import DistInfo

    length = 5
    sampler = StepBatchSampler(length, 2, 1, DistInfo(), seed=4)
    it = iter(sampler)
    visits = [v for _ in range(10) for v in next(it)]  # 4 epochs
    for epoch in range(4):
        chunk = visits[epoch * length:(epoch + 1) * length]
        assert sorted(v % length for v in chunk) == list(range(length))
        assert all(v // length == epoch for v in chunk)
    resumed = iter(StepBatchSampler(length, 2, 1, DistInfo(), seed=4, start_step=3))
    assert next(resumed) == visits[6:8]

    cfg = cfg_for("refiner", tmp_path)  # a 2x3 grid: 2 tile groups x 2 flips to draw from
    items = Trainer(cfg, resume="never").stage.items(ProceduralFrames(cfg.data.frame_size, cfg.data.layouts, seed=3,
                                                                     length=length))
    cuts = {(tuple(items[v]["boxes"].flatten().tolist()), bool(items[v]["coarse_image"][0, 0, 0] !=
                                                              items[v % length]["coarse_image"][0, 0, 0]))
            for v in range(2, 12 * length, length)}
    assert len(cuts) > 1  # frame 2 cut differently across 12 epochs
    np.testing.assert_array_equal(items[2 + 7 * length]["gt"].shape, items[2]["gt"].shape)


def test_mirrored_boxes_crop_the_flipped_frame():
    image = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    boxes = np.array([[2.0, 3.0, 10.0, 12.0], [5.0, 17.0, 15.0, 13.0]])
    direct = tiling.crop_resize(np.ascontiguousarray(image[:, ::-1]), boxes, (8, 8))
    mirrored = tiling.crop_resize(image, mirror_boxes(boxes, 30), (8, 8))[..., ::-1]
    np.testing.assert_allclose(direct, mirrored, atol=1e-6)


def test_refiner_noisy_and_distill_stages_train(coarse_run, tmp_path):
    coarse_ckpt = coarse_run[0] / "final"
    noisy = cfg_for("refiner", tmp_path, **{"train.stage": "noisy-pretrain", "train.steps": 2,
                                            "model.coarse_checkpoint": coarse_ckpt})
    Trainer(noisy, resume="never").fit()
    # Noisy Pretraining must learn: its output moves away from the flat prior it starts at ...
    _, pre, _ = load_models(tmp_path / "refiner" / "final")
    prior, noise = pre.noisy_inputs(1)
    with torch.no_grad():
        assert float((pre.eval()(torch.zeros(1, 3, *pre.tile_size), prior, *noise) - prior).abs().sum()) > 0
    ref = cfg_for("refiner", tmp_path, **{"train.steps": 2, "model.coarse_checkpoint": coarse_ckpt,
                                          "model.init_refiner": tmp_path / "refiner" / "final",
                                          "train.out_dir": tmp_path / "ref2"})
    # ... and fine-tuning from it starts as the identity over the coarse depth (zeroed heads).
    start = build_refiner(ref, load_models(coarse_ckpt)[0], torch.device("cpu")).eval()
    cd = 1 + 10 * torch.rand(2, 1, *start.tile_size)
    guide = [torch.randn(2, *g) for g in start.guidance]
    torch.testing.assert_close(start(torch.randn(2, 3, *start.tile_size), cd, *guide), cd)
    metrics = Trainer(ref, resume="never").fit()
    assert {"val/absrel", "val/coarse_absrel", "val/edge_absrel", "val/consistency"} <= set(metrics)
    rows = read_metrics(tmp_path / "ref2" / "train.csv")
    assert all(0 < r["train/kept"] <= 1 and r["train/gpct"] >= 0 and r["train/c2f"] > 0 for r in rows)
    assert [r["train/tiles_seen"] for r in rows] == [8.0, 16.0]  # 2 frames x 4 tiles per step
    distill = cfg_for("refiner", tmp_path, **{"train.stage": "distill", "train.steps": 2, "data.degrade": "true",
                                              "model.teacher_checkpoint": tmp_path / "ref2" / "final",
                                              "train.out_dir": tmp_path / "distill"})
    Trainer(distill, resume="never").fit()
    rows = read_metrics(tmp_path / "distill" / "train.csv")
    assert all(np.isfinite(r["train/dsd"]) and r["train/gpct"] >= 0 for r in rows)
    _, refiner, meta = load_models(tmp_path / "distill" / "final")
    assert meta["train"]["stage"] == "distill" and refiner is not None


def test_precision_choices(tmp_path):
    with pytest.raises(ValueError, match="'train.precision'"):
        Trainer(cfg_for("coarse", tmp_path, **{"train.precision": "fp16"}), resume="never")
    cfg = cfg_for("coarse", tmp_path, **{"train.precision": "bf16", "train.steps": 1})
    metrics = Trainer(cfg, resume="never").fit()
    assert np.isfinite(metrics["val/absrel"])


def test_bad_config_fails_before_training(tmp_path):
    with pytest.raises(ValueError, match="'model.refiner'"):
        Trainer(cfg_for("refiner", tmp_path, **{"model.refiner": "prv2-huge"}))
    assert not (tmp_path / "refiner").exists()


def test_a_budget_spent_during_a_checkpoint_still_ends_on_a_validated_step(tmp_path, monkeypatch):
    # The clock crosses the budget while step 1's checkpoint is written (not while stepping): the
    # run must still end on a step that validates and saves, not leave the loop with no metrics.
    cfg = cfg_for("coarse", tmp_path, **{"train.steps": 100000, "train.max_minutes": 0.01, "train.val_every": 100000,
                                         "train.ckpt_every": 1})
    trainer = Trainer(cfg, resume="never")
    slow = Trainer.save_checkpoint

    def save_slowly(self):
        time.sleep(0.8)
        return slow(self)

    monkeypatch.setattr(Trainer, "save_checkpoint", save_slowly)
    metrics = trainer.fit()
    assert np.isfinite(metrics["val/absrel"]) and trainer.step >= 1
    assert (tmp_path / "coarse" / "final" / "model.safetensors").is_file()


def test_wall_clock_budget_ends_the_run_and_drives_the_schedule(tmp_path):
    cfg = cfg_for("coarse", tmp_path, **{"train.steps": 100000, "train.max_minutes": 0.02, "train.val_every": 100000,
                                         "train.ckpt_every": 100000, "optim.schedule": "cosine"})
    trainer = Trainer(cfg, resume="never")
    metrics = trainer.fit()
    assert 1 <= trainer.step < 100000 and trainer.elapsed >= 0.02 * 60
    assert np.isfinite(metrics["val/absrel"])  # the last step validates and saves like a finished run
    assert (tmp_path / "coarse" / "final" / "model.safetensors").is_file()
    rows = read_metrics(tmp_path / "coarse" / "train.csv")
    assert rows[-1]["train/lr"] < 0.2 * cfg.optim.lr  # the cosine ran out with the clock, not the steps


def test_loss_at_twice_the_tile_resolution(tmp_path):
    """loss.scale 2: ground truth cut at 2x the tile size, the prediction upsampled to it."""
    cfg = cfg_for("refiner", tmp_path, **{"loss.scale": 2, "train.steps": 1})
    trainer = Trainer(cfg, resume="never")
    items = trainer.stage.items(ProceduralFrames(cfg.data.frame_size, cfg.data.layouts, seed=3))
    item = items[0]
    th, tw = cfg.model.tile_size
    assert item["rgb0"].shape[-2:] == (th, tw) and item["gt"].shape[-2:] == (2 * th, 2 * tw)
    batch = {k: v[None] for k, v in item.items()}
    loss, parts = trainer.stage.train_step(trainer.model, batch)
    assert np.isfinite(float(loss.detach())) and parts["tiles"] == 4.0
    loss.backward()


def test_loss_through_the_joint_upsampling(tmp_path):
    """loss.upsample joint_bilateral: the prediction reaches the 2x ground truth as the runtime's
    joint bilateral upsampling brings tiles to the frame, guided by the tiles' own colours."""
    from edgedepth import tiling_reference
    from edgedepth.train.stages.refiner import at_gt

    cfg = cfg_for("refiner", tmp_path, **{"loss.scale": 2, "loss.upsample": "joint_bilateral", "train.steps": 1})
    trainer = Trainer(cfg, resume="never")
    stage = trainer.stage
    item = stage.items(ProceduralFrames(cfg.data.frame_size, cfg.data.layouts, seed=3))[0]
    th, tw = cfg.model.tile_size
    assert item["image_gt"].shape == (4, 3, 2 * th, 2 * tw)
    batch = {k: v[None] for k, v in item.items()}
    tiles = stage.cut_tiles(batch)
    up = at_gt(tiles.gt[:, :, ::2, ::2].contiguous(), tiles)
    # Tile 0 against the reference fed the same colours (guide = the tile, image = its 2x crop).
    mean, std = (torch.tensor(v).view(3, 1, 1) for v in (stage.coarse.mean, stage.coarse.std))
    guide = (tiles.rgb[0] * std + mean).double().numpy()
    image = item["image_gt"][0].permute(1, 2, 0).double().numpy() * 255.0
    want = tiling_reference.joint_upsample(tiles.gt[0, 0, ::2, ::2].double().numpy(), guide, image,
                                           cfg.tiling.joint_sigma)
    np.testing.assert_allclose(up[0, 0].numpy(), want, rtol=1e-4)
    bilinear = torch.nn.functional.interpolate(tiles.gt[:, :, ::2, ::2], scale_factor=2, mode="bilinear")
    assert not torch.allclose(up, bilinear)  # the colours moved depth edges
    loss, parts = stage.train_step(trainer.model, batch)
    assert np.isfinite(float(loss.detach())) and parts["tiles"] == 4.0
    loss.backward()


def test_loss_through_the_guided_upsampling(tmp_path):
    """loss.upsample guided: the prediction reaches the 2x ground truth through the runtime's fast
    guided filter (tiling.guided_*), guided by the tiles' own colours, and gradients reach it."""
    from edgedepth.guided_filter import fast_guided_upsample
    from edgedepth.train.stages.refiner import at_gt

    cfg = cfg_for("refiner", tmp_path, **{"loss.scale": 2, "loss.upsample": "guided", "train.steps": 1})
    trainer = Trainer(cfg, resume="never")
    stage = trainer.stage
    item = stage.items(ProceduralFrames(cfg.data.frame_size, cfg.data.layouts, seed=3))[0]
    batch = {k: v[None] for k, v in item.items()}
    tiles = stage.cut_tiles(batch)
    depth = tiles.coarse.clone().requires_grad_()
    up = at_gt(depth, tiles)
    mean, std = (torch.tensor(v).view(3, 1, 1) for v in (stage.coarse.mean, stage.coarse.std))
    t = cfg.tiling
    for i in (0, 3):
        guide = (tiles.rgb[i] * std + mean).double().numpy()
        image = item["image_gt"][i].permute(1, 2, 0).double().numpy() * 255.0
        want = fast_guided_upsample(tiles.coarse[i, 0].double().numpy(), guide, image, t.guided_step,
                                    t.guided_radius, t.guided_eps)
        np.testing.assert_allclose(up[i, 0].detach().numpy(), want, rtol=1e-4)
    up.sum().backward()
    assert depth.grad.abs().sum() > 0
    loss, parts = stage.train_step(trainer.model, batch)
    assert np.isfinite(float(loss.detach())) and parts["tiles"] == 4.0
    loss.backward()


def test_loss_upsample_is_checked(tmp_path):
    with pytest.raises(ValueError, match="loss.upsample"):
        cfg_for("refiner", tmp_path, **{"loss.upsample": "bicubic"})


@pytest.mark.parametrize("channels_last", [True, False])
def test_channels_last_trains_in_nhwc_and_saves_plain_tensors(tmp_path, channels_last):
    cfg = cfg_for("refiner", tmp_path, **{"train.channels_last": str(channels_last).lower(), "train.steps": 2,
                                          "train.val_every": 2, "train.ckpt_every": 2})
    trainer = Trainer(cfg, resume="never")
    convs = [m for m in trainer.stage.refiner.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)
             and m.in_channels // m.groups > 1]
    coarse_convs = [m for m in trainer.stage.coarse.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)
                    and m.in_channels // m.groups > 1]
    assert convs and coarse_convs
    for m in convs + coarse_convs:
        assert m.weight.is_contiguous(memory_format=torch.channels_last) == channels_last
        assert m.weight.is_contiguous() == (not channels_last)
    trainer.fit()
    coarse, refiner, _ = load_models(tmp_path / "refiner" / "final")
    assert all(p.is_contiguous() for p in refiner.parameters())
    trained = dict(trainer.stage.refiner.named_parameters())
    for name, p in refiner.named_parameters():
        torch.testing.assert_close(p, trained[name].detach(), rtol=0, atol=0)


def test_tile_boxes_stay_on_the_host(tmp_path):
    # Boxes and frame sizes feed host-side crop tables and GPCT's pairs: moved to an accelerator
    # they would cost a synchronisation per crop and per frame. ("meta" stands in for the device.)
    trainer = Trainer(cfg_for("refiner", tmp_path), resume="never")
    trainer.device = torch.device("meta")
    batch = {"gt": torch.zeros(2, 4, 1, 8, 8), "boxes": torch.zeros(2, 4, 4, dtype=torch.float64),
             "frame_hw": torch.ones(2, 2, dtype=torch.float64), "name": "x"}
    (moved,) = list(trainer._micro_batches([batch]))
    assert moved["gt"].device.type == "meta" and moved["name"] == "x"
    assert moved["boxes"].device.type == "cpu" and moved["frame_hw"].device.type == "cpu"


def test_compiled_training_follows_the_eager_run_and_saves_plain_names(tmp_path):
    """train.compile: inductor fuses the training step's kernels but must not change its maths
    beyond rounding (the same loss and gradients on one batch), and the run saves a checkpoint
    that loads into the plain model."""
    from edgedepth.train.data import build_loaders

    cfg = cfg_for("refiner", tmp_path, **{"train.compile": "true", "train.steps": 2, "train.val_every": 2,
                                          "train.ckpt_every": 2})
    trainer = Trainer(cfg, resume="never")
    assert hasattr(trainer.model, "_orig_mod")
    loader, _ = build_loaders(cfg, trainer.dist, trainer.stage.items)
    (batch,) = list(trainer._micro_batches([next(iter(loader))]))
    trainer.stage.train_mode()
    params = list(trainer.stage.trainable.parameters())
    losses, grads = [], []
    for model in (trainer.model._orig_mod, trainer.model):
        torch.manual_seed(0)  # the stage's own noise draws alike
        loss, _ = trainer.stage.train_step(model, batch)
        loss.backward()
        losses.append(float(loss.detach()))
        grads.append(torch.cat([p.grad.flatten() for p in params]))
        trainer.optimizer.zero_grad(set_to_none=True)
    assert losses[1] == pytest.approx(losses[0], rel=1e-4)
    assert float((grads[1] - grads[0]).norm() / grads[0].norm()) < 1e-3
    trainer.fit()
    _, refiner, _ = load_models(tmp_path / "refiner" / "final")
    trained = dict(trainer.stage.refiner.named_parameters())
    assert set(dict(refiner.named_parameters())) == set(trained)
    for name, p in refiner.named_parameters():
        torch.testing.assert_close(p, trained[name].detach(), rtol=0, atol=0)
