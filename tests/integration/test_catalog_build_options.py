"""``catalog build`` options: every combination works or is refused with a clear message.

Real files from ``catalogs/sample/data``: a BigEarthNet S1 VV patch (dB), a NAIP tile (R, G, B,
NIR uint8), the Alexandria DSM and the Autzen lidar file.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pystac
import pytest
import rasterio

from eo_fusion.catalogs.build.infer import infer_raster, resolve_band_option
from eo_fusion.catalogs.build.raster import read_raster
from eo_fusion.catalogs.build.times import parse_option, time_in_name
from eo_fusion.cli import main
from eo_fusion.errors import BadInputError

DATA = Path(__file__).resolve().parents[2] / "catalogs" / "sample" / "data"
S1 = "S1A_IW_GRDH_1SDV_20170613T165043_33UUP_87_48"
VV = DATA / "bigearthnet" / "s1" / S1 / f"{S1}_VV.tif"
NAIP = DATA / "naip" / "m_4709963_se_14_1_20160816.tif"
DSM = DATA / "alexandria" / "dsm.tif"
LAS = DATA / "autzen" / "autzen-thin-srs.las"


def _item(out: Path) -> pystac.Item:
    items = list(pystac.Catalog.from_file(str(out / "catalog.json")).get_items(recursive=True))
    assert len(items) == 1
    return items[0]


def test_bands_vv_on_a_file_without_a_pol_in_its_name(tmp_path: Path) -> None:
    """``--bands VV`` used to crash with an IndexError."""
    f = tmp_path / "scene_20170613.tif"
    shutil.copy(VV, f)
    assert main(["catalog", "build", str(f), "--out", str(tmp_path / "o"), "--bands", "VV"]) == 0
    item = _item(tmp_path / "o")
    assert item.collection_id == "s1-grd"
    assert item.assets["data"].extra_fields["eo:bands"][0]["name"] == "s1:VV"
    assert item.assets["data"].extra_fields["raster:bands"][0]["unit"] == "dB"  # value range
    # A date without a time: the whole day, not a made-up midnight instant.
    assert item.datetime is None
    assert item.properties["start_datetime"] == "2017-06-13T00:00:00Z"
    assert item.properties["end_datetime"] == "2017-06-13T23:59:59Z"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--bands", "VV"], "--bands gives 1 keys for 4 band(s)"),
        (["--bands", "s2:B04,nonsense,-,-"], "'nonsense' is neither a band-registry key"),
        (["--bands", "-,-,-,-"], "places no band"),
        (["--modality", "dem", "--bands", "s1:VV"], "are not bands of --modality dem"),
        (["--modality", "lidar"], "a raster cannot be modality lidar"),
        (["--modality", "s2-l3"], "unknown modality 's2-l3'"),
        (["--modality", "s1-grd"], "do not belong to modality s1-grd"),
        (["--datetime", "yesterday"], "--datetime 'yesterday' is not an ISO 8601"),
        (["--datetime", "2021-06-30/2021-06-01"], "the end is before the start"),
        (["--crs", "EPSG:999999"], "--crs: 'EPSG:999999' is not a CRS"),
        (["--units", "dB", "--modality", "aerial", "--bands", "s1:VV,-,-,-"], "not bands of"),
    ],
)
def test_refused_with_a_clear_message(tmp_path: Path, capsys, args: list[str], message) -> None:
    rc = main(["catalog", "build", str(NAIP), "--out", str(tmp_path / "o"), *args])
    err = " ".join(capsys.readouterr().err.split())
    assert rc == 2, err
    assert message in err and "unexpected" not in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("path", "args", "message"),
    [
        (VV, ["--units", "linear"], "declared linear but it has negative values"),
        (DSM, ["--units", "dB"], "elevation in 'dB' is not supported"),
        (LAS, ["--bands", "s1:VV"], "--bands/--units apply to rasters"),
        (LAS, ["--modality", "dem"], "--modality dem given, but the file is lidar data"),
        (VV, ["--modality", "s2-l2a"], "do not belong to modality s2-l2a"),
    ],
)
def test_options_that_contradict_the_file(tmp_path: Path, capsys, path, args, message) -> None:
    rc = main(["catalog", "build", str(path), "--out", str(tmp_path / "o"), *args])
    err = " ".join(capsys.readouterr().err.split())
    assert rc == 2 and message in err and "unexpected" not in err, err


def test_missing_out_and_no_inputs(tmp_path: Path, capsys) -> None:
    assert main(["catalog", "build", str(NAIP)]) == 2
    assert "--out is missing" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["catalog", "build", str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 2
    assert "no input files found" in capsys.readouterr().err
    assert main(["catalog", "build", str(tmp_path / "nope.tif"), "--out", str(tmp_path)]) == 2
    assert "no such file or folder" in capsys.readouterr().err


def test_options_that_work(tmp_path: Path) -> None:
    out = tmp_path / "a"
    assert main(["catalog", "build", str(NAIP), "--out", str(out), "--modality", "aerial"]) == 0
    assert [b["name"] for b in _item(out).assets["data"].extra_fields["eo:bands"]] == [
        "aerial:red", "aerial:green", "aerial:blue", "aerial:nir"]  # fmt: skip
    out = tmp_path / "b"
    assert main(["catalog", "build", str(DSM), "--out", str(out), "--datetime",
                 "2018-03-01/2018-03-31", "--units", "ft"]) == 0  # fmt: skip
    item = _item(out)
    assert item.collection_id == "dsm" and item.id == "alexandria"  # dsm.tif: the folder names it
    rb = item.assets["dsm"].extra_fields["raster:bands"][0]
    assert rb["unit"] == "m" and rb["scale"] == pytest.approx(0.3048)
    assert item.properties["start_datetime"] == "2018-03-01T00:00:00Z"
    assert item.properties["end_datetime"] == "2018-03-31T23:59:59Z"
    out = tmp_path / "c"
    assert (
        main(
            [
                "catalog",
                "build",
                str(VV),
                "--out",
                str(out),
                "--bands",
                "s1:VV",
                "--modality",
                "s1-grd",
                "--datetime",
                "2017-06-13T16:50:43Z",
                "--id",
                "x",
            ]
        )
        == 0
    )
    item = _item(out)  # fmt: skip
    assert item.datetime is not None and item.datetime.isoformat() == "2017-06-13T16:50:43+00:00"
    assert pystac.Catalog.from_file(str(out / "catalog.json")).id == "x"


def test_unparseable_times_are_warned_about(tmp_path: Path, capsys) -> None:
    f = tmp_path / "vv_20171399.tif"  # month 13: not a date
    shutil.copy(VV, f)
    with rasterio.open(f, "r+") as ds:
        ds.update_tags(ACQUISITION_DATETIME="last tuesday")
    rc = main(["catalog", "build", str(f), "--out", str(tmp_path / "o")])
    err = " ".join(capsys.readouterr().err.split())
    assert rc == 2  # S1 needs a time: refused, and both bad times are named
    assert "ACQUISITION_DATETIME='last tuesday' is not a time I can read" in err
    assert "'20171399' in 'vv_20171399.tif' looks like a date but is not one" in err
    assert "pass --datetime" in err


def test_name_conventions_and_time_parsing() -> None:
    assert resolve_band_option("B8A") == "s2:B8A" and resolve_band_option("vh") == "s1:VH"
    assert resolve_band_option("-") is None and resolve_band_option("s1:VV") == "s1:VV"
    notes: list[str] = []
    w = time_in_name("S2B_MSIL1C_20220126T103309_N0400_R108_T32TMT_20220126T123456", notes)
    assert (
        w is not None
        and w.instant is not None
        and w.instant.isoformat().startswith("2022-01-26T10:33:09")
    )
    assert time_in_name("T33UUP_87_48", notes) is None and notes == []
    span = parse_option("2021-06-01")
    assert span.instant is None and (span.end - span.start).total_seconds() == 86399
    with pytest.raises(BadInputError):
        parse_option("2021-06-01/2021-07-01/2021-08-01")


@pytest.mark.parametrize(
    ("name", "expect"),
    [
        ("T33UUP_20170613T101031_B8A_20m", ("s2:B8A", "B8A", "T33UUP_20170613T101031")),
        (
            "S2A_MSIL2A_20170613T101031_87_48_B04",
            ("s2:B04", "B04", "S2A_MSIL2A_20170613T101031_87_48"),
        ),
        ("s1a-iw-grd-vh-20170613t165043", ("s1:VH", "VH", "s1a-iw-grd-20170613t165043")),
        ("Copernicus_DSM_COG_10_N45_00_E014_00_DEM", ("elevation:dem", "data", None)),
        ("lidar_dtm_2m", ("elevation:dtm", "data", None)),
        ("worldcover_2021", ("label:landcover", "data", None)),
    ],
)
def test_naming_conventions(name: str, expect: tuple) -> None:
    """Single-band files named by the common conventions (pixels: the S1 VV patch)."""
    info = read_raster(VV)
    if "MSIL2A" in name or "B8A" in name:
        expect_mod = "s2-l2a" if "MSIL2A" in name else None
    else:
        expect_mod = "any"
    if expect_mod is None:  # no level in the name: refused with the fix
        with pytest.raises(BadInputError, match="pass --modality s2-l2a or --modality s2-l1c"):
            infer_raster(name, info, where=name)
        inf = infer_raster(name, info, where=name, modality="s2-l2a")
    else:
        inf = infer_raster(name, info, where=name)
    key, asset_key, group = expect
    assert inf.band_keys == (key,) and inf.asset_key == asset_key
    assert inf.group == (group or name)


BEN = "S2A_MSIL2A_20170613T101031_87_48"


def _ben(band: str) -> Path:
    return DATA / "bigearthnet" / "s2" / BEN / f"{BEN}_{band}.tif"


def test_safe_layout_one_item_finest_band_aux_skipped(tmp_path: Path) -> None:
    """A SAFE-style L2A granule: R10m/R20m folders, a band at two resolutions, AOT/TCI."""
    safe = tmp_path / "S2A_MSIL2A_20170613T101031_N0205_R022_T33UUP_20170613T101031.SAFE"
    img = safe / "GRANULE" / "L2A_T33UUP_A010281_20170613T101031" / "IMG_DATA"
    for res, files in {
        "R10m": {"B04_10m": "B04", "B02_10m": "B02", "AOT_10m": "B03", "TCI_10m": None},
        "R20m": {"B04_20m": "B05", "B05_20m": "B05", "SCL_20m": "B06"},
    }.items():
        (img / res).mkdir(parents=True)
        for name, src in files.items():
            dst = img / res / f"T33UUP_20170613T101031_{name}.tif"
            if src is None:  # a true-colour preview: 3-band uint8
                with rasterio.open(NAIP) as s:
                    prof = s.profile | {"count": 3}
                    with rasterio.open(dst, "w", **prof) as d:
                        d.write(s.read([1, 2, 3]))
            else:
                shutil.copy(_ben(src), dst)
    out = tmp_path / "stac"
    assert main(["catalog", "build", str(safe), "--out", str(out)]) == 0
    item = _item(out)
    assert item.id == "T33UUP_20170613T101031" and item.collection_id == "s2-l2a"
    assert sorted(item.assets) == ["B02", "B04", "B05", "SCL"]  # no AOT, TCI; B04 once
    assert item.assets["B04"].extra_fields["gsd"] == 10.0
    assert item.properties["s2:processing_baseline"] == "02.05"  # from the SAFE name
    assert item.assets["B04"].extra_fields["raster:bands"][0]["offset"] == 0.0


def test_earth_search_download_layout(tmp_path: Path) -> None:
    """Assets saved under their Earth Search keys in a folder named by the item id."""
    folder = tmp_path / "S2B_33UUP_20230601_0_L2A"
    folder.mkdir()
    for key, src in {"red": "B04", "nir08": "B8A", "scl": "B05"}.items():
        shutil.copy(_ben(src), folder / f"{key}.tif")
    out = tmp_path / "stac"
    assert main(["catalog", "build", str(folder), "--out", str(out)]) == 0
    item = _item(out)
    assert item.id == "S2B_33UUP_20230601_0_L2A" and item.collection_id == "s2-l2a"
    names = {k: a.extra_fields["eo:bands"][0]["name"] for k, a in item.assets.items()}
    assert names == {"red": "s2:B04", "nir08": "s2:B8A", "scl": "s2:SCL"}
    assert item.properties["start_datetime"] == "2023-06-01T00:00:00Z"


def test_a_file_mixing_modalities_is_refused(capsys, tmp_path: Path) -> None:
    togo = DATA / "togo" / "98-togo_2019-02-06_2020-02-01.tif"
    assert main(["catalog", "build", str(togo), "--out", str(tmp_path)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "bands of several modalities in one file" in err and "--bands" in err
