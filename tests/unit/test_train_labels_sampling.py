"""Training-job building blocks: label files and mapping tables, chip sampling and the split,
devices and precision, the job spec's checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from odc.geo.geobox import GeoBox

from eo_fusion.devices import autocast_dtype, resolve_device
from eo_fusion.errors import BadInputError, ConfigError
from eo_fusion.train.job import LabelsSpec, TrainJobSpec
from eo_fusion.train.labels import rasterize_fields, read_fields
from eo_fusion.train.sampling import assign_blocks, sample_chips


@pytest.fixture(scope="module")
def slovenia(sample_dir: Path) -> Path:
    return sample_dir / "data" / "slovenia"


def test_vector_labels_with_a_csv_mapping_table(slovenia, tmp_path):
    table = tmp_path / "codes.csv"
    table.write_text("code,model\n1,crops\n2,trees\n3,grass\n4,grass\n")  # 8 (artificial) unmapped
    spec = LabelsSpec(
        path=slovenia / "LULC.gpkg",
        class_column="LULC_ID",
        mapping=table,
        mapping_from="code",
        mapping_to="model",
    )
    fields = read_fields(spec, "EPSG:32633")
    assert [c.name for c in fields.classes] == ["crops", "grass", "trees"]
    assert [c.id for c in fields.classes] == [1, 2, 3]
    assert fields.dropped == {"0": 4, "8": 11}
    assert len(fields.frame) == 88 - 15
    # shrubland (4) and grassland (3) are one class now
    assert set(fields.frame["cls"]) == {0, 1, 2}
    with pytest.raises(BadInputError, match=r"'8'.*not in the mapping"):
        read_fields(spec.model_copy(update={"unmapped": "error", "ignore": []}), None)


def test_yaml_mapping_and_missing_column(slovenia, tmp_path):
    table = tmp_path / "codes.yaml"
    table.write_text("1: 10\n2: 20\n")
    spec = LabelsSpec(path=slovenia / "LULC.gpkg", class_column="LULC_ID", mapping=table)
    assert [c.id for c in read_fields(spec, None).classes] == [10, 20]
    with pytest.raises(BadInputError, match="NOPE"):
        read_fields(LabelsSpec(path=slovenia / "LULC.gpkg", class_column="NOPE"), None)


def test_raster_labels_are_polygonised_and_burn_back_exactly(slovenia):
    path = slovenia / "LULC_slovenia_10m.tif"
    fields = read_fields(LabelsSpec(path=path), None)
    with rasterio.open(path) as src:
        ref = src.read(1)
        gbox = GeoBox(ref.shape, src.transform, src.crs.to_wkt())
    burnt = rasterize_fields(fields, gbox)
    ids = np.array([c.id for c in fields.classes])
    got = np.where(burnt >= 0, ids[fields.frame["cls"].to_numpy()[np.maximum(burnt, 0)]], 0)
    assert (got == ref).all()  # every pixel back in its class; 0 (no data) stays unlabelled
    assert {c.id for c in fields.classes} == set(np.unique(ref)) - {0}


def test_bad_label_files_are_refused_by_the_spec(tmp_path):
    with pytest.raises(ValueError, match="class_column"):
        LabelsSpec(path=tmp_path / "fields.gpkg")
    with pytest.raises(ValueError, match="unknown suffix"):
        LabelsSpec(path=tmp_path / "fields.xlsx", class_column="c")
    with pytest.raises(ValueError, match="block_size"):
        TrainJobSpec.model_validate(
            {
                "name": "j",
                "modalities": {"s2-l1c": {}},
                "labels": {"path": str(tmp_path / "f.gpkg"), "class_column": "c"},
                "sampling": {"chip_size": 64},
                "split": {"block_size": 320},
            }
        )


def test_a_misspelt_option_is_named(tmp_path):
    from eo_fusion.config import parse_spec

    data = {
        "name": "j",
        "modalities": {"s2-l1c": {}},
        "labels": {"path": "f.gpkg", "class_colum": "c"},
    }
    with pytest.raises(ConfigError, match=r"class_colum.*did you mean 'class_column'"):
        parse_spec(TrainJobSpec, data, base_dir=tmp_path, source="job.yaml")


def _fields(seed: int, shape=(60, 70), n=12) -> tuple[np.ndarray, np.ndarray]:
    """Voronoi-like fields: each pixel belongs to the nearest of ``n`` random seeds."""
    rng = np.random.default_rng(seed)
    pts = rng.uniform(0, shape, size=(n, 2))
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    d = (yy[..., None] - pts[:, 0]) ** 2 + (xx[..., None] - pts[:, 1]) ** 2
    fields = d.argmin(-1).astype(np.int32)
    fields[rng.random(shape) < 0.05] = -1  # some unlabelled pixels
    return fields, rng.integers(0, 3, n)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), size=st.sampled_from([4, 6, 8]), margin=st.integers(0, 2))
def test_sampled_chips_respect_split_blocks_buffer_and_caps(seed, size, margin):
    fields, cls = _fields(seed)
    block = size + 2 * margin + 6
    chips, block_split, fsplit = sample_chips(
        fields,
        cls,
        size=size,
        block=block,
        margin=margin,
        per_class=3,
        max_per_field=2,
        min_labelled=0.2,
        fractions=(0.3, 0.0),
        seeds=(seed, seed + 1),
    )
    nbx = -(-fields.shape[1] // block)
    per_field: dict[int, int] = {}
    per_class: dict[tuple[str, int], int] = {}
    for c in chips:
        # inside one block, margin away from its edges, in that block's split
        by, bx = c.block
        assert by * block + margin <= c.row and c.row + size <= (by + 1) * block - margin
        assert bx * block + margin <= c.col and c.col + size <= (bx + 1) * block - margin
        assert block_split[by * nbx + bx] == c.split == fsplit[c.field]
        win = fields[c.row : c.row + size, c.col : c.col + size]
        assert (win == c.field).any() and cls[c.field] == c.cls
        mine = (win >= 0) & (fsplit[np.maximum(win, 0)] == c.split)
        assert mine.mean() >= 0.2
        per_field[c.field] = per_field.get(c.field, 0) + 1
        per_class[(c.split, c.cls)] = per_class.get((c.split, c.cls), 0) + 1
    assert all(v <= 2 for v in per_field.values())
    assert all(v <= 3 for v in per_class.values())
    assert len({c.id for c in chips}) == len(chips)


def test_sampling_is_deterministic_and_balanced():
    fields, cls = _fields(3, shape=(120, 120), n=40)
    kw = dict(
        size=8,
        block=30,
        margin=1,
        per_class=4,
        max_per_field=2,
        min_labelled=0.1,
        fractions=(0.25, 0.0),
        seeds=(0, 0),
    )
    a, _, _ = sample_chips(fields, cls, **kw)
    b, _, _ = sample_chips(fields, cls, **kw)
    assert a == b
    counts = {}
    for c in a:
        counts[(c.split, c.cls)] = counts.get((c.split, c.cls), 0) + 1
    assert counts[("train", 0)] == counts[("train", 1)] == counts[("train", 2)] == 4


def test_block_assignment():
    out = assign_blocks([0, 1, 2, 3, 4, 5, 6, 7], 10, 0.25, 0.25, seed=1)
    assert (out == "val").sum() == 2 and (out == "test").sum() == 2
    assert out[8] == out[9] == "train"  # unlabelled blocks
    assert (assign_blocks([3], 4, 0.5, 0.0, seed=0) == "train").all()


def test_devices_and_precision():
    cpu = resolve_device("cpu")
    assert cpu.type == "cpu"
    auto = resolve_device("auto").type
    assert auto == "cuda" if torch.cuda.is_available() else auto in ("mps", "cpu")
    assert autocast_dtype(cpu, "auto") is None and autocast_dtype(cpu, "fp32") is None
    assert autocast_dtype(cpu, "bf16") == torch.bfloat16
    with pytest.raises(BadInputError, match="fp16"):
        autocast_dtype(cpu, "fp16")
    if not torch.cuda.is_available():
        with pytest.raises(BadInputError, match="no CUDA GPU"):
            resolve_device("cuda")
    with pytest.raises(BadInputError, match="unknown device"):
        resolve_device("tpu")
