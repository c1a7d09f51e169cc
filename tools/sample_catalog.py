"""Build the embedded sample catalog (``catalogs/sample/stac/``) from ``catalogs/sample/data/``.

Run ``python -m tools.sample_catalog`` from the repository root (or ``make sample-catalog``); the
output is deterministic for the same input files and is committed to the repository.

The sample sets come from different places (Slovenia, BigEarthNet patches in several European
countries, Togo, Alexandria VA, Eugene OR, North Dakota, Virginia's Eastern Shore, Monaco,
Kotka). Every item carries ``eo_fusion:site`` so nobody mistakes two of them for one scene.

What each item declares that its files do not say (band order, units, dates) is taken from
``catalogs/sample/data/README.md``; where the upstream data does not state an acquisition date
the item carries a declared placeholder range and ``eo_fusion:datetime_note`` says so.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import rasterio

from eo_fusion.catalogs.build import AssetSpec, BuildResult, ItemSpec, build_catalog
from eo_fusion.catalogs.normalize import baseline_in_product_id

#: The repository this maintainer script belongs to (it is not part of the installed package).
REPO = Path(__file__).resolve().parents[1]
SAMPLE_ROOT = REPO / "catalogs" / "sample"
DATA = SAMPLE_ROOT / "data"
OUT = SAMPLE_ROOT / "stac"

#: Band order of the Slovenia 13-band files (data README).
SLOVENIA_S2_ORDER = (
    "B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12",
)  # fmt: skip
_PLACEHOLDER_START = datetime(2000, 1, 1, tzinfo=UTC)
_PLACEHOLDER_END = datetime(2023, 12, 31, 23, 59, 59, tzinfo=UTC)
_PLACEHOLDER_NOTE = (
    "acquisition date not stated upstream; start/end is a declared placeholder range"
)


def _utc(text: str) -> datetime:
    dt = datetime.fromisoformat(text.replace(" ", "T").replace("Z", "+00:00"))
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def _s2cloudless_cover(path: Path) -> float:
    """Cloud cover (%) of a Slovenia L1C file, measured with s2cloudless (probability > 0.4)."""
    from s2cloudless import S2PixelCloudDetector

    with rasterio.open(path) as ds:
        arr = ds.read().astype("float32")  # (13, y, x) TOA reflectance 0-1
    order = {b: i for i, b in enumerate(SLOVENIA_S2_ORDER)}
    use = ["B01", "B02", "B04", "B05", "B08", "B8A", "B09", "B10", "B11", "B12"]
    x = np.stack([arr[order[b]] for b in use], axis=-1)[None]
    det = S2PixelCloudDetector(threshold=0.4, average_over=4, dilation_size=2, all_bands=False)
    mask = det.get_cloud_masks(x)[0]
    return round(float(mask.mean() * 100.0), 2)


def _site(site: str, **extra: Any) -> dict[str, Any]:
    return {"eo_fusion:site": site, **extra}


def slovenia_specs() -> list[ItemSpec]:
    d = DATA / "slovenia"
    specs = []
    keys = tuple(f"s2:{b}" for b in SLOVENIA_S2_ORDER)
    for f in sorted(d.glob("S2_L1C_TOA_*_13bands.tif")):
        with rasterio.open(f) as ds:
            when = _utc(ds.tags()["ACQUISITION"])
        props = _site(
            "slovenia",
            **{
                "eo:cloud_cover": _s2cloudless_cover(f),
                "eo_fusion:cloud_cover_method": "s2cloudless 1.7 (threshold 0.4) on this file",
                "platform": "sentinel-2",
                "processing:level": "L1C",
            },
        )
        specs.append(
            ItemSpec(
                id=f"slovenia-s2-l1c-{when:%Y%m%d}",
                modality="s2-l1c",
                # Float TOA reflectance already (resampled to 10 m by the provider): scale 1.
                assets=(AssetSpec("toa", f, keys, units="reflectance", scale=1.0, offset=0.0),),
                datetime=when,
                properties=props,
            )
        )
    specs.append(
        ItemSpec(
            id="slovenia-dem",
            modality="dem",
            assets=(AssetSpec("dem", d / "DEM_slovenia_10m.tif", ("elevation:dem",), units="m"),),
            start=_PLACEHOLDER_START,
            end=_PLACEHOLDER_END,
            properties=_site("slovenia", **_note()),
        )
    )
    import geopandas as gpd

    lulc_dates = sorted(gpd.read_file(d / "LULC.gpkg")["DATE"].astype(str))
    specs.append(
        ItemSpec(
            id="slovenia-lulc",
            modality="labels",
            assets=(
                AssetSpec("labels", d / "LULC_slovenia_10m.tif", ("label:landcover",), nodata=0),
                AssetSpec("polygons", d / "LULC.gpkg", roles=("labels",), title="88 polygons"),
            ),
            start=_utc(lulc_dates[0]),
            end=_utc(lulc_dates[-1]),
            properties=_site(
                "slovenia", **{"eo_fusion:source": "Slovenian RABA land-use register"}
            ),
        )
    )
    stamps = json.loads((d / "timestamps.json").read_text())
    ndvi = d / "NDVI_68dates.tif"
    for i, stamp in enumerate(stamps):
        keys_i = tuple("index:ndvi" if j == i else None for j in range(len(stamps)))
        names = tuple(f"ndvi_{s[:10]}" for s in stamps)
        when = _utc(stamp)
        specs.append(
            ItemSpec(
                id=f"slovenia-ndvi-{i:02d}-{when:%Y%m%dT%H%M%S}",
                modality="ndvi",
                assets=(AssetSpec("ndvi", ndvi, keys_i, band_names=names, units="1", scale=1.0),),
                datetime=when,
                properties=_site("slovenia", **{"eo_fusion:band_of_file": i + 1}),
            )
        )
    return specs


def _note() -> dict[str, Any]:
    return {"eo_fusion:datetime_note": _PLACEHOLDER_NOTE}


_BEN_S2 = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12")


def bigearthnet_specs() -> list[ItemSpec]:
    specs = []
    s1_by_s2: dict[str, Path] = {}
    for folder in sorted((DATA / "bigearthnet" / "s1").iterdir()):
        meta = json.loads(next(folder.glob("*_labels_metadata.json")).read_text())
        s1_by_s2[meta["corresponding_s2_patch"]] = folder
    for folder in sorted((DATA / "bigearthnet" / "s2").iterdir()):
        name = folder.name
        meta = json.loads(next(folder.glob("*_labels_metadata.json")).read_text())
        s1 = s1_by_s2.get(name)
        bands = [
            AssetSpec(b, folder / f"{name}_{b}.tif", (f"s2:{b}",), units="reflectance",
                      scale=1e-4, offset=0.0)
            for b in _BEN_S2
        ]  # fmt: skip
        meta_asset = AssetSpec("labels_metadata", next(folder.glob("*.json")), roles=("metadata",))
        assets = (*bands, meta_asset)
        props = _site(
            "bigearthnet",
            **{
                "bigearthnet:labels": meta["labels"],
                "bigearthnet:tile_source": meta.get("tile_source"),
                "bigearthnet:s1_pair": f"bigearthnet-s1-{s1.name}" if s1 else None,
                "platform": "sentinel-2",
                "processing:level": "L2A",
                # Baseline of the source L1C (tile_source ..._N02xx_...): < 04.00, no offset.
                "s2:processing_baseline": baseline_in_product_id(meta.get("tile_source", "")),
            },
        )
        specs.append(
            ItemSpec(
                id=f"bigearthnet-s2-{name}",
                modality="s2-l2a",
                assets=assets,
                datetime=_utc(meta["acquisition_date"]),
                properties={k: v for k, v in props.items() if v is not None},
            )
        )
    for s2_name, folder in sorted(s1_by_s2.items()):
        name = folder.name
        meta = json.loads(next(folder.glob("*_labels_metadata.json")).read_text())
        pols = [
            AssetSpec(p.lower(), folder / f"{name}_{p}.tif", (f"s1:{p}",), units="dB", scale=1.0)
            for p in ("VV", "VH")
        ]
        meta_asset = AssetSpec("labels_metadata", next(folder.glob("*.json")), roles=("metadata",))
        assets = (*pols, meta_asset)
        specs.append(
            ItemSpec(
                id=f"bigearthnet-s1-{name}",
                modality="s1-grd",
                assets=assets,
                datetime=_utc(meta["acquisition_time"])
                if "acquisition_time" in meta
                else _date_from_s1_name(name),
                properties=_site(
                    "bigearthnet",
                    **{
                        "bigearthnet:labels": meta["labels"],
                        "bigearthnet:s2_pair": f"bigearthnet-s2-{s2_name}",
                        "platform": "sentinel-1",
                        "sar:polarizations": ["VV", "VH"],
                        "eo_fusion:note": "terrain-corrected backscatter in dB on the S2 grid",
                    },
                ),
            )
        )
    return specs


def _date_from_s1_name(name: str) -> datetime:
    from eo_fusion.catalogs.build import datetime_from_name

    dt = datetime_from_name(name.split("_")[4])
    assert dt is not None, name
    return dt


_TOGO_BLOCK = ("VV", "VH", "B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10",
               "B11", "B12", "temperature_2m", "total_precipitation")  # fmt: skip


def togo_specs() -> list[ItemSpec]:
    f = next((DATA / "togo").glob("*.tif"))
    with rasterio.open(f) as ds:
        descs = list(ds.descriptions)
    n = len(descs)
    block = len(descs[: descs.index("elevation")]) // 12  # 17 bands per month
    specs = []
    for m in range(12):
        year, month = (2019, m + 2) if m < 11 else (2020, 1)
        start = datetime(year, month, 1, tzinfo=UTC)
        end = datetime(year + (month == 12), month % 12 + 1, 1, tzinfo=UTC) - timedelta(seconds=1)
        s2_keys: list[str | None] = [None] * n
        s1_keys: list[str | None] = [None] * n
        for j, name in enumerate(_TOGO_BLOCK[:block]):
            idx = m * block + j
            if name in ("VV", "VH"):
                s1_keys[idx] = f"s1:{name}"
            elif name.startswith("B"):
                s2_keys[idx] = "s2:B" + (name[1:].zfill(2) if name[1:].isdigit() else name[1:])
        props = _site("togo", **{"eo_fusion:composite": "monthly (CropHarvest export)"})
        specs.append(
            ItemSpec(
                id=f"togo-s2-l1c-{start:%Y%m}",
                modality="s2-l1c",
                assets=(
                    AssetSpec(
                        "cropharvest",
                        f,
                        tuple(s2_keys),
                        band_names=tuple(descs),
                        units="reflectance",
                        scale=1e-4,
                        offset=0.0,
                    ),
                ),
                properties={**props, "processing:level": "L1C"},
                start=start,
                end=end,
            )
        )
        specs.append(
            ItemSpec(
                id=f"togo-s1-{start:%Y%m}",
                modality="s1-grd",
                assets=(
                    AssetSpec(
                        "cropharvest",
                        f,
                        tuple(s1_keys),
                        band_names=tuple(descs),
                        units="dB",
                        scale=1.0,
                    ),
                ),
                properties={**props, "sar:polarizations": ["VV", "VH"]},
                start=start,
                end=end,
            )
        )
    dem_keys = tuple("elevation:dem" if d == "elevation" else None for d in descs)
    specs.append(
        ItemSpec(
            id="togo-srtm",
            modality="dem",
            assets=(
                AssetSpec(
                    "cropharvest", f, dem_keys, band_names=tuple(descs), units="m", scale=1.0
                ),
            ),
            start=_PLACEHOLDER_START,
            end=_PLACEHOLDER_END,
            properties=_site("togo", **_note(), **{"eo_fusion:source": "SRTM via CropHarvest"}),
        )
    )
    return specs


def alexandria_specs() -> list[ItemSpec]:
    d = DATA / "alexandria"
    props = _site("alexandria", **_note())
    bld = AssetSpec("buildings", d / "buildings.geojson", roles=("labels",), title="84 footprints")
    return [
        ItemSpec(
            id="alexandria-dsm",
            modality="dsm",
            assets=(
                AssetSpec("dsm", d / "dsm.tif", ("elevation:dsm",), units="m"),
                AssetSpec("ndsm", d / "hag.tif", ("elevation:ndsm",), units="m"),
                bld,
            ),
            properties=props,
            start=_PLACEHOLDER_START,
            end=_PLACEHOLDER_END,
        ),
        ItemSpec(
            id="alexandria-dtm",
            modality="dtm",
            assets=(AssetSpec("dtm", d / "dtm.tif", ("elevation:dtm",), units="m"),),
            properties=props,
            start=_PLACEHOLDER_START,
            end=_PLACEHOLDER_END,
        ),
    ]


def autzen_specs() -> list[ItemSpec]:
    d = DATA / "autzen"
    wkt = (d / "autzen-srs.wkt").read_text().strip()
    props = _site("autzen", **_note())
    return [
        ItemSpec(
            id="autzen-aerial",
            modality="aerial",
            assets=(
                AssetSpec("image", d / "autzen.jpg", ("aerial:red", "aerial:green", "aerial:blue")),
                AssetSpec("world_file", d / "autzen.wld", roles=("metadata",)),
                AssetSpec("crs_wkt", d / "autzen-srs.wkt", roles=("metadata",)),
            ),
            crs=wkt,
            properties=props,
            start=_PLACEHOLDER_START,
            end=_PLACEHOLDER_END,
        ),
        ItemSpec(
            id="autzen-lidar",
            modality="lidar",
            assets=(AssetSpec("pointcloud", d / "autzen-thin-srs.las"),),
            crs=wkt,
            properties=props,
            start=_PLACEHOLDER_START,
            end=_PLACEHOLDER_END,
        ),
    ]


def naip_specs() -> list[ItemSpec]:
    from eo_fusion.catalogs.build import datetime_from_name

    specs = []
    for f in sorted((DATA / "naip").glob("*.tif")):
        when = datetime_from_name(f.stem.rsplit("_", 1)[1])
        specs.append(
            ItemSpec(
                id=f"naip-{f.stem}",
                modality="aerial",
                assets=(
                    AssetSpec(
                        "image", f, ("aerial:red", "aerial:green", "aerial:blue", "aerial:nir")
                    ),
                ),
                datetime=when,
                properties=_site("naip-north-dakota", **{"eo_fusion:gsd_note": "resampled to 5 m"}),
            )
        )
    return specs


def s2_18svg_specs() -> list[ItemSpec]:
    d = DATA / "s2_18svg"
    assets = tuple(
        AssetSpec(
            f.stem.split("_", 1)[1],
            f,
            (f"s2:{f.stem.split('_', 1)[1]}",),
            units="reflectance",
            scale=1e-4,
            offset=0.0,
        )
        for f in sorted(d.glob("s2_B*.tif"))
    )
    return [
        ItemSpec(
            id="s2-18svg-l1c-20160112",
            modality="s2-l1c",
            assets=assets,
            datetime=datetime(2016, 1, 12, tzinfo=UTC),
            properties=_site(
                "virginia-eastern-shore",
                **{
                    "s2:mgrs_tile": "18SVG",
                    "processing:level": "L1C",
                    "eo_fusion:note": "10 m bands not available in this sample",
                },
            ),
        )
    ]


def osm_specs() -> list[ItemSpec]:
    d = DATA / "osm"
    return [
        ItemSpec(
            id="osm-monaco",
            modality="osm",
            assets=(AssetSpec("pbf", d / "monaco.osm.pbf"),),
            datetime=datetime(2023, 12, 26, tzinfo=UTC),
            properties=_site("monaco", **{"license": "ODbL-1.0"}),
        ),
        ItemSpec(
            id="osm-kotka",
            modality="osm",
            assets=(AssetSpec("pbf", d / "pyrosm_test_kotka.osm.pbf"),),
            start=_PLACEHOLDER_START,
            end=_PLACEHOLDER_END,
            properties=_site("kotka", **_note(), **{"license": "ODbL-1.0"}),
        ),
    ]


def sample_specs() -> list[ItemSpec]:
    """Every item of the sample catalog."""
    return (
        slovenia_specs()
        + bigearthnet_specs()
        + togo_specs()
        + alexandria_specs()
        + autzen_specs()
        + naip_specs()
        + s2_18svg_specs()
        + osm_specs()
    )


def build_sample(out: Path = OUT) -> BuildResult:
    """Rebuild ``catalogs/sample/stac`` (deterministic for the same data files)."""
    import shutil

    if out.exists():
        shutil.rmtree(out)
    return build_catalog(
        sample_specs(),
        out,
        catalog_id="eo-fusion-sample",
        title="eo-fusion sample catalog",
        description=(
            "Small real EO samples from DIFFERENT places (see catalogs/sample/README.md); "
            "never combine items of different eo_fusion:site values as one scene."
        ),
    )


if __name__ == "__main__":  # pragma: no cover
    result = build_sample()
    print(f"wrote {result.n_items} items in {len(result.collections)} collections to {OUT}")
