"""`eo-fusion train` on the Slovenia land-use polygons (LULC.gpkg) over the sample catalog.

Make-test-sized: 16 px chips, a few per class, 4 steps of a nano model. Asserted: the chip store
(manifest, checksums, labels burnt from the polygons), the spatial split (no field labelled on
both sides, chips of different splits at least the buffer apart, each chip inside one block),
class balance and the per-field cap, the metrics report, the model card, resuming, bad input;
the torch/Lightning/TorchGeo datasets over the same store and a TorchGeo trainer on them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from eo_fusion.cli import main
from eo_fusion.models import checkpoint as ck
from eo_fusion.train.chips import ChipManifest, open_chip, sha256_tree

pytestmark = pytest.mark.slow

CHIP, PER_CLASS, CAP, BLOCK, BUFFER, RES = 16, 3, 2, 400.0, 20.0, 10.0


def _job(repo_root: Path, tmp: Path, **over) -> Path:
    cfg = yaml.safe_load((repo_root / "pipelines" / "train_landuse_sample.yaml").read_text())
    cfg["labels"]["path"] = str(repo_root / "catalogs/sample/data/slovenia/LULC.gpkg")
    cfg["sampling"] = {"chip_size": CHIP, "chips_per_class": PER_CLASS, "max_per_polygon": CAP}
    cfg["split"] = {"block_size": BLOCK, "buffer": BUFFER, "val_fraction": 0.25}
    cfg["training"] |= {
        "steps": 4,
        "batch_size": 4,
        "checkpoint_every": 2,
        "threads": 1,
        "device": "cpu",
    }
    cfg["out"] = str(tmp / "out")
    for k, v in over.items():
        cfg[k] = v
    path = tmp / "job.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def trained(repo_root, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("trainjob")
    job = _job(repo_root, tmp)
    assert main(["train", str(job)]) == 0
    (run_dir,) = (tmp / "out").iterdir()
    return job, run_dir


def test_chip_store_manifest_and_checksums(trained):
    _, run_dir = trained
    m = ChipManifest.load(run_dir)
    assert m is not None
    assert [c["name"] for c in m.classes][:2] == ["cultivated land", "forest"]
    assert m.dropped == {"0": 4}  # the four polygons without a land-use code
    done = m.usable()
    assert len(done) >= 10 and set(m.usable("val")) and set(m.usable("train"))
    for cid in done:
        rec = m.chips[cid]
        assert sha256_tree(run_dir / "chips.zarr" / cid) == rec.sha256
        ds = open_chip(run_dir, cid)
        assert ds["s2-l1c"].shape == (13, CHIP, CHIP)  # a 13-band L1C composite per chip
        assert ds.attrs["transform"][2] == pytest.approx(465180 + rec.col * RES)
        # the chip's own field is labelled with its class
        lab, fld = ds["label"].values, ds["field"].values
        assert (lab[fld == rec.field] == rec.cls).any()


def test_split_has_no_field_on_both_sides_and_a_buffer(trained):
    _, run_dir = trained
    m = ChipManifest.load(run_dir)
    assert m is not None
    labelled: dict[str, set[int]] = {"train": set(), "val": set(), "test": set()}
    for cid in m.usable():
        ds = open_chip(run_dir, cid)
        lab, fld = ds["label"].values, ds["field"].values
        labelled[m.chips[cid].split] |= set(np.unique(fld[lab >= 0]).tolist())
        for f in np.unique(fld[lab >= 0]):  # labelled fields belong to the chip's split
            assert m.fields[str(f)]["split"] == m.chips[cid].split
    assert labelled["train"] and labelled["val"]
    assert not labelled["train"] & labelled["val"]
    block_px, gap = int(BLOCK / RES), BUFFER / RES
    chips = [m.chips[c] for c in m.usable()]
    for a in chips:
        assert a.row // block_px == (a.row + CHIP - 1) // block_px == a.block[0]
        assert a.col // block_px == (a.col + CHIP - 1) // block_px == a.block[1]
        for b in chips:
            if a.split != b.split:
                dy = max(b.row - (a.row + CHIP), a.row - (b.row + CHIP), 0)
                dx = max(b.col - (a.col + CHIP), a.col - (b.col + CHIP), 0)
                assert max(dy, dx) >= gap


def test_sampling_is_balanced_and_capped(trained):
    _, run_dir = trained
    m = ChipManifest.load(run_dir)
    assert m is not None
    per_class: dict[tuple[str, int], int] = {}
    per_field: dict[int, int] = {}
    for rec in m.chips.values():
        per_class[(rec.split, rec.cls)] = per_class.get((rec.split, rec.cls), 0) + 1
        per_field[rec.field] = per_field.get(rec.field, 0) + 1
    assert max(per_class.values()) == PER_CLASS
    assert max(per_field.values()) <= CAP
    assert len({cls for _, cls in per_class}) >= 4  # every well-represented class is drawn


def _train_dir(run_dir: Path, task: str = "segmentation") -> Path:
    """The training folder of ``task`` (one per set of training options)."""
    (out,) = [
        d
        for d in run_dir.glob("train-*")
        if json.loads((d / "report.json").read_text())["training"]["trained_as"] == task
    ]
    return out


def test_report_metrics_and_model_card(trained):
    _, run_dir = trained
    out = _train_dir(run_dir)
    report = json.loads((out / "report.json").read_text())
    val = report["metrics"]["val"]
    assert 0 <= val["oa"] <= 1 and 0 <= val["miou"] <= 1 and 0 <= val["f1_macro"] <= 1
    assert set(val["per_class"]) == {"1", "2", "3", "4", "8"}
    m = ChipManifest.load(run_dir)
    assert m is not None
    n_val = sum(int((open_chip(run_dir, c)["label"].values >= 0).sum()) for c in m.usable("val"))
    assert val["n_pixels"] == n_val
    assert np.asarray(val["confusion"]).sum() == n_val
    assert report["training"]["device"] == "cpu" and report["training"]["processes"] == 1
    assert "mIoU" in (out / "report.md").read_text()
    loss = (out / "loss.csv").read_text().splitlines()
    assert loss[0] == "step,loss,seconds" and len(loss) == 5
    model = ck.load(out / "model")
    task = model.task("landcover")
    assert [c.id for c in task.classes] == [1, 2, 3, 4, 8]
    assert task.inputs["s2-l1c"][0] == "s2:B01"
    assert task.training["trained_as"] == "segmentation"


def test_rerun_reuses_chips_and_checkpoint(trained, capsys):
    job, run_dir = trained
    before = (_train_dir(run_dir) / "loss.csv").read_text()
    assert main(["train", str(job)]) == 0
    out = capsys.readouterr().out
    m = ChipManifest.load(run_dir)
    assert m is not None
    assert f"({len(m.chips)} reused)" in out
    assert (_train_dir(run_dir) / "loss.csv").read_text() == before  # nothing retrained


def test_parcel_task_on_the_same_chips_scores_each_field_once(trained):
    from eo_fusion.train.job import load_train_job
    from eo_fusion.train.runner import run_train_job
    from eo_fusion.train.tasks import MIN_PARCEL_PIXELS

    job_path, run_dir = trained
    job = load_train_job(job_path)
    job = job.model_copy(
        update={"training": job.training.model_copy(update={"task": "parcel", "steps": 3})}
    )
    summary = run_train_job(job)
    assert summary.run_dir == run_dir and summary.train_dir is not None
    m = ChipManifest.load(run_dir)
    assert m is not None
    assert summary.reused_chips == len(m.chips)  # training options do not rebuild chips
    assert len(list(run_dir.glob("train-*"))) == 2  # the segmentation run is kept
    scored = set()
    for cid in m.usable("val"):
        ds = open_chip(run_dir, cid)
        lab, fld = ds["label"].values, ds["field"].values
        f, n = np.unique(fld[lab >= 0], return_counts=True)
        scored |= {int(k) for k, c in zip(f, n, strict=True) if c >= MIN_PARCEL_PIXELS}
    val = summary.metrics["val"]
    assert val["n_pixels"] == len(scored)  # one vote per field, whatever its chip count
    true_per_class = np.asarray(val["confusion"]).sum(axis=1)
    expected = np.bincount([int(m.fields[str(f)]["cls"]) for f in scored], minlength=5)
    assert true_per_class.tolist() == expected.tolist()
    report = json.loads((summary.train_dir / "report.json").read_text())
    assert report["training"]["trained_as"] == "parcel"


def test_bad_job_exits_2_naming_the_key(repo_root, tmp_path, capsys):
    job = _job(repo_root, tmp_path, sampling={"chip_size": CHIP, "chips_per_clas": 3})
    assert main(["train", str(job)]) == 2
    err = capsys.readouterr().err
    assert "chips_per_clas" in err and "chips_per_class" in err
    job = _job(repo_root, tmp_path)
    cfg = yaml.safe_load(job.read_text())
    cfg["labels"]["class_column"] = "NO_SUCH"
    job.write_text(yaml.safe_dump(cfg))
    assert main(["train", str(job)]) == 2
    assert "NO_SUCH" in capsys.readouterr().err


# -- datasets for the ecosystem ---------------------------------------------------------------


def test_chip_dataset_samples(trained):
    from torch.utils.data import DataLoader

    from eo_fusion.train.datasets import ChipDataset, collate_chips

    _, run_dir = trained
    ds = ChipDataset(run_dir, "train")
    s = ds[0]
    assert s["keys"]["s2-l1c"][3] == "s2:B04"
    assert tuple(s["inputs"]["s2-l1c"].shape) == (13, CHIP, CHIP)
    assert s["valid"]["s2-l1c"].dtype.is_floating_point is False
    assert s["mask"].min() >= -1 and s["split"] == "train"
    batch = next(iter(DataLoader(ds, batch_size=3, collate_fn=collate_chips)))
    assert tuple(batch["inputs"]["s2-l1c"].shape) == (3, 13, CHIP, CHIP)
    # reflectance in physical units (L1C TOA 0..1) unless standardised
    x = batch["inputs"]["s2-l1c"]
    assert 0 < float(x[x == x].mean()) < 1


# Lightning 2.6's own pytree helper (lightning/pytorch/utilities/_pytree.py) builds a LeafSpec,
# which torch 2.14 deprecates; the warning is inside Lightning, not in eo-fusion's code.
@pytest.mark.filterwarnings(
    "ignore:`isinstance\\(treespec, LeafSpec\\)` is deprecated:FutureWarning"
)
def test_lightning_datamodule_and_torchgeo_trainer(trained, tmp_path):
    import lightning.pytorch as pl
    import torch
    from torchgeo.datasets import NonGeoDataset
    from torchgeo.trainers import SemanticSegmentationTask

    from eo_fusion.train.datasets import ChipDataModule

    _, run_dir = trained
    dm = ChipDataModule(run_dir, batch_size=4, torchgeo=True)
    train = dm.dataset("train")
    assert isinstance(train, NonGeoDataset)
    sample = train[0]
    assert sample["image"].dtype == torch.float32 and sample["mask"].dtype == torch.int64
    assert torch.isfinite(sample["image"]).all() and int(sample["mask"].min()) >= 0
    task = SemanticSegmentationTask(
        model="fcn",
        in_channels=train.in_channels,
        num_classes=train.num_classes,
        num_filters=8,
        ignore_index=train.ignore_index,
        lr=1e-2,
    )
    trainer = pl.Trainer(
        max_steps=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=1,
        default_root_dir=tmp_path,
    )
    before = [p.detach().clone() for p in task.parameters()]
    trainer.fit(task, datamodule=dm)
    assert trainer.global_step == 2
    assert any(not torch.equal(a, b) for a, b in zip(before, task.parameters(), strict=True))
    (scores,) = trainer.validate(task, datamodule=dm, verbose=False)
    assert np.isfinite(scores["val_loss"]) and 0 <= scores["val_MulticlassAccuracy"] <= 1


def test_map_job_runs_the_trained_model(trained, repo_root, tmp_path):
    """Labels -> training job -> model -> map job: the product carries the trained classes."""
    from eo_fusion import api

    _, run_dir = trained
    cfg = yaml.safe_load((repo_root / "pipelines" / "sample_landcover.yaml").read_text())
    cfg["aoi"]["geojson"] = str(repo_root / "catalogs/sample/data/slovenia/bbox.geojson")
    cfg["modalities"] = {"s2-l1c": cfg["modalities"]["s2-l1c"]}
    cfg["model"] = {"task": "landcover", "checkpoint": str(_train_dir(run_dir) / "model")}
    cfg["output"] = {"dir": str(tmp_path / "map")}
    job = tmp_path / "map.yaml"
    job.write_text(yaml.safe_dump(cfg))
    assert main(["map", str(job)]) == 0
    (cog,) = (tmp_path / "map").rglob("*_classes.tif")
    product = api.open_product(cog)
    names = {c["value"]: c["name"] for c in product.classes}
    assert names == {
        1: "cultivated land",
        2: "forest",
        3: "grassland",
        4: "schrubland",
        8: "artificial surface",
    }
    values = set(np.unique(product.read().values).tolist())
    assert values <= {1, 2, 3, 4, 8, 255} and len(values - {255}) >= 2


def test_time_series_job_trains_the_temporal_model(repo_root, tmp_path):
    from eo_fusion.train.datasets import ChipDataset

    job = _job(repo_root, tmp_path)
    cfg = yaml.safe_load(job.read_text())
    cfg["modalities"] = {"s2-l1c": {"mode": "timeseries"}}
    cfg["grid"]["halo"] = 0
    cfg["sampling"] |= {"chips_per_class": 1, "max_per_polygon": 1}
    cfg["training"] |= {"steps": 2, "batch_size": 2}
    job.write_text(yaml.safe_dump(cfg))
    assert main(["train", str(job)]) == 0
    (run_dir,) = (tmp_path / "out").iterdir()
    sample = ChipDataset(run_dir, "train")[0]
    assert tuple(sample["inputs"]["s2-l1c"].shape) == (5, 13, CHIP, CHIP)  # 5 dates
    assert sample["doy"]["s2-l1c"].tolist() == [192.0, 212.0, 232.0, 242.0, 252.0]
    model = ck.load(_train_dir(run_dir) / "model")
    assert model.task("crops").mode == "timeseries"


def test_two_series_with_their_own_dates_and_modality_dropout(repo_root, tmp_path):
    """S2 L1C (5 dates) and NDVI (its own, other dates) train one temporal model: rows over the
    union of dates, nothing paired by index (issue 13)."""
    from eo_fusion.train.datasets import ChipDataset
    from eo_fusion.train.tasks import chip_arrays

    job = _job(repo_root, tmp_path)
    cfg = yaml.safe_load(job.read_text())
    cfg["modalities"] = {"s2-l1c": {"mode": "timeseries"}, "ndvi": {"mode": "timeseries"}}
    cfg["grid"]["halo"] = 0
    cfg["sampling"] |= {"chips_per_class": 1, "max_per_polygon": 1}
    cfg["training"] |= {"steps": 2, "batch_size": 2, "modality_dropout": 0.5}
    job.write_text(yaml.safe_dump(cfg))
    assert main(["train", str(job)]) == 0
    (run_dir,) = (tmp_path / "out").iterdir()
    ds = ChipDataset(run_dir, "train")
    n1, n2 = len(ds.dates["s2-l1c"]), len(ds.dates["ndvi"])
    assert n1 == 5 and n2 >= 1 and set(ds.dates["ndvi"]) != set(ds.dates["s2-l1c"])
    arrays = chip_arrays(ds)
    assert arrays.x.shape[1:3] == (n1 + n2, 14) and len(arrays.doy) == n1 + n2
    # The chips' cloud / no-data masks reach the model: every flagged pixel is NaN.
    chip = open_chip(run_dir, ds.ids[0])
    flagged = ~chip["s2-l1c:valid"].values.astype(bool)  # (time, y, x)
    assert flagged.any()
    assert np.isnan(ds[0]["inputs"]["s2-l1c"].numpy().transpose(1, 0, 2, 3)[:, flagged]).all()
    s2 = [i for i, k in enumerate(arrays.keys) if k.startswith("s2:")]
    ndvi = arrays.keys.index("index:ndvi")
    assert sorted(arrays.groups) == sorted([tuple(s2), (ndvi,)])
    s2_rows = np.isfinite(arrays.x[:, :, s2]).any(axis=(0, 2, 3, 4))
    ndvi_rows = np.isfinite(arrays.x[:, :, ndvi]).any(axis=(0, 2, 3))
    assert not (s2_rows & ndvi_rows).any()  # a row holds one modality's date
    # the two cloudy S2 dates (99.85 % and 100 % cloud) are masked out entirely
    assert 1 <= s2_rows.sum() <= n1 and 1 <= ndvi_rows.sum() <= n2
    model = ck.load(_train_dir(run_dir) / "model")
    assert model.task("crops").inputs == {m: ds.inputs[m] for m in ds.inputs}
