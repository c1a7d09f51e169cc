"""Convert the published Galileo-nano and Presto weights once to safetensors + a model card.

Usage (from the repository root, with the project's environment)::

    python tools/convert_encoders.py --weights /work/shared/weights \\
        --galileo-normalization <galileo checkout>/config/normalization.json

``--weights`` holds ``galileo-nano/{encoder.pt,config.json,LICENSE}`` and
``presto/{default_model.pt,default.json,LICENSE}`` as copied from github.com/nasaharvest/galileo
(commit 0f0b5b95ac81acef4b74cf4686dc877202f4541b, ``data/models/nano``) and
github.com/nasaharvest/presto (commit 13173d028f035abcbcc3b13829314323a5c15d02). The Galileo
pretraining statistics (``config/normalization.json`` of the same Galileo commit) give the
normalisation the model was trained with: each band ``(x - (mean - 2 std)) / (4 std)``.

Writes ``eo_fusion/data/encoders/<name>/{model.safetensors, model_card.json, LICENSE}``. Only the
encoders are kept (not the decoders / target encoder). The pickles are read with
``torch.load(weights_only=True)`` (tensors only); nothing else is unpickled.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

OUT = Path(__file__).resolve().parent.parent / "eo_fusion" / "data" / "encoders"
GALILEO_COMMIT = "0f0b5b95ac81acef4b74cf4686dc877202f4541b"
PRESTO_COMMIT = "13173d028f035abcbcc3b13829314323a5c15d02"

GALILEO_CITATION = (
    "Tseng, G., Fuller, A., Reil, M., Herzog, H., Beukema, P., Bastani, F., Green, J. R., "
    "Shelhamer, E., Kerner, H., Rolnick, D. (2025). Galileo: Learning Global and Local Features "
    "in Pretrained Remote Sensing Models. arXiv:2502.09356."
)
PRESTO_CITATION = (
    "Tseng, G., Cartuyvels, R., Zvonkov, I., Purohit, M., Rolnick, D., Kerner, H. (2023). "
    "Lightweight, Pre-trained Transformers for Remote Sensing Timeseries. arXiv:2304.14065."
)

# Registry key and unit conversion of each published band name; None: no registry band (the
# group is then always masked when built from registry bands).
S2_KEYS = {
    "B2": "s2:B02",
    "B3": "s2:B03",
    "B4": "s2:B04",
    "B5": "s2:B05",
    "B6": "s2:B06",
    "B7": "s2:B07",
    "B8": "s2:B08",
    "B8A": "s2:B8A",
    "B11": "s2:B11",
    "B12": "s2:B12",
}


def _band(name: str, key: str | None, convert: str = "none", derive: str | None = None) -> dict:
    out: dict[str, Any] = {"name": name, "key": key, "convert": convert}
    if derive:
        out["derive"] = derive
    return out


def _registry_band(name: str) -> dict:
    """Registry mapping of a published band name (shared by Galileo and Presto)."""
    if name in ("VV", "VH"):
        return _band(name, f"s1:{name}", "db")
    if name in S2_KEYS:
        return _band(name, S2_KEYS[name], "x10000")
    if name == "NDVI":
        return _band(name, "index:ndvi", derive="ndvi")
    if name == "elevation":
        return _band(name, "elevation:dem")
    if name == "slope":
        return _band(name, "elevation:slope", derive="slope")
    if name in ("x", "y", "z"):
        return _band(name, None, derive="latlon")
    return _band(name, None)


# ------------------------------------------------------------------------------------------------
# Galileo
# ------------------------------------------------------------------------------------------------

GALILEO_GROUPS: dict[str, list[tuple[str, list[str]]]] = {
    "space_time": [
        ("S1", ["VV", "VH"]),
        ("S2_RGB", ["B2", "B3", "B4"]),
        ("S2_Red_Edge", ["B5", "B6", "B7"]),
        ("S2_NIR_10m", ["B8"]),
        ("S2_NIR_20m", ["B8A"]),
        ("S2_SWIR", ["B11", "B12"]),
        ("NDVI", ["NDVI"]),
    ],
    "space": [
        ("SRTM", ["elevation", "slope"]),
        (
            "DW",
            [
                f"DW_{c}"
                for c in (
                    "water",
                    "trees",
                    "grass",
                    "flooded_vegetation",
                    "crops",
                    "shrub_and_scrub",
                    "built",
                    "bare",
                    "snow_and_ice",
                )
            ],
        ),
        (
            "WC",
            [
                f"WC_{c}"
                for c in ("temporarycrops", "maize", "wintercereals", "springcereals", "irrigation")
            ],
        ),
    ],
    "time": [
        ("ERA5", ["temperature_2m", "total_precipitation_sum"]),
        ("TC", ["def", "soil", "aet"]),
        ("VIIRS", ["avg_rad"]),
    ],
    "static": [("LS", ["b1"]), ("location", ["x", "y", "z"])],
}
# The static DW / WC groups repeat the space ones with a suffix.
GALILEO_GROUPS["static"] += [
    ("DW_static", [f"{b}_static" for b in GALILEO_GROUPS["space"][1][1]]),
    ("WC_static", [f"{b}_static" for b in GALILEO_GROUPS["space"][2][1]]),
]
# The statistics file is keyed by the number of bands of each token kind.
STATS_KEY = {"space_time": "13", "space": "16", "time": "6", "static": "18"}
# Bands normalised with mean ± 2 std (the rest use fixed shift / divisor values of the dataset).
STD_BANDS = {
    "space_time": {b for _, bs in GALILEO_GROUPS["space_time"] for b in bs} - {"NDVI"},
    "space": {"elevation", "slope"},
    "time": {b for _, bs in GALILEO_GROUPS["time"] for b in bs},
    "static": {"b1"},
}
FIXED_DIV = {"WC": 100.0, "WC_static": 100.0}


def _galileo_norm(kind: str, group: str, band: str, idx: int, stats: dict) -> tuple[float, float]:
    """(shift, divisor) of one Galileo band as used in pretraining."""
    if band in STD_BANDS[kind]:
        mean, std = stats[STATS_KEY[kind]]["mean"][idx], stats[STATS_KEY[kind]]["std"][idx]
        lo, hi = mean - 2 * std, mean + 2 * std
        if kind == "static":
            # The published code keeps static shifts/divisors in an integer array, so the
            # LandScan values it trained with are truncated to integers.
            return float(int(lo)), float(int(hi - lo))
        return lo, hi - lo
    return 0.0, FIXED_DIV.get(group, 1.0)


def galileo_card(folder: Path, stats: dict) -> dict[str, Any]:
    cfg = json.loads((folder / "config.json").read_text())["model"]["encoder"]
    groups: dict[str, list[dict]] = {}
    for kind, gs in GALILEO_GROUPS.items():
        idx = 0
        groups[kind] = []
        for name, bands in gs:
            entries = []
            for b in bands:
                shift, div = _galileo_norm(kind, name, b, idx, stats)
                entries.append({**_registry_band(b), "shift": shift, "div": div})
                idx += 1
            groups[kind].append({"name": name, "bands": entries})
    return {
        "format": "eo-fusion-encoder/1",
        "name": "galileo-nano",
        "title": "Galileo nano (multimodal space-time encoder)",
        "family": "galileo",
        "architecture": {
            "embedding_size": cfg["embedding_size"],
            "depth": cfg["depth"],
            "num_heads": cfg["num_heads"],
            "mlp_ratio": cfg["mlp_ratio"],
            "max_sequence_length": cfg["max_sequence_length"],
            "max_patch_size": cfg["max_patch_size"],
            "base_gsd_m": 10.0,
        },
        "inputs": {
            "summary": "S1 VV/VH, S2 (10 bands), NDVI per patch and month, SRTM elevation + "
            "slope per patch, location (optional latitude/longitude); the model's ERA5, "
            "TerraClimate, VIIRS, Dynamic World, WorldCereal and LandScan groups have no "
            "registry band and are masked unless given through the low-level API",
            "units": "S1 backscatter in dB (registry linear -> 10 log10), S2 as DN "
            "(reflectance x 10000, trained on Earth Engine's L1C S2_HARMONIZED), elevation in "
            "m, slope in degrees; months 0 = January",
            "resolution_m": 10.0,
            "patch_sizes": list(range(1, cfg["max_patch_size"] + 1)),
        },
        "groups": groups,
        "normalization": "per band (x_model_units - shift) / div: mean +/- 2 std of the "
        "pretraining data for S1, S2, SRTM, ERA5, TC, VIIRS, LandScan; fixed values otherwise "
        "(config/normalization.json with std_multiplier 2, as in the published train.py)",
        "license": {"spdx": "MIT", "file": "LICENSE"},
        "citation": GALILEO_CITATION,
        "source": {
            "repository": "https://github.com/nasaharvest/galileo",
            "commit": GALILEO_COMMIT,
            "files": ["data/models/nano/encoder.pt", "data/models/nano/config.json"],
        },
    }


def galileo_weights(folder: Path) -> dict[str, torch.Tensor]:
    sd = torch.load(folder / "encoder.pt", map_location="cpu", weights_only=True)
    # Some published state dicts carry an extra ".backbone" in their names.
    return {k.replace(".backbone", ""): v.contiguous() for k, v in sd.items()}


# ------------------------------------------------------------------------------------------------
# Presto
# ------------------------------------------------------------------------------------------------

PRESTO_BANDS: list[tuple[str, float, float]] = [
    # (name, shift, div): the model sees (x - shift) / div (published ADD_BY = -shift, DIVIDE_BY)
    ("VV", -25.0, 25.0),
    ("VH", -25.0, 25.0),
    *[(b, 0.0, 1e4) for b in S2_KEYS],
    ("temperature_2m", 272.15, 35.0),
    ("total_precipitation", 0.0, 0.03),
    ("elevation", 0.0, 2000.0),
    ("slope", 0.0, 50.0),
    ("NDVI", 0.0, 1.0),
]
PRESTO_GROUPS = [
    ("S1", ["VV", "VH"]),
    ("S2_RGB", ["B2", "B3", "B4"]),
    ("S2_Red_Edge", ["B5", "B6", "B7"]),
    ("S2_NIR_10m", ["B8"]),
    ("S2_NIR_20m", ["B8A"]),
    ("S2_SWIR", ["B11", "B12"]),
    ("ERA5", ["temperature_2m", "total_precipitation"]),
    ("SRTM", ["elevation", "slope"]),
    ("NDVI", ["NDVI"]),
]


def presto_card(folder: Path) -> dict[str, Any]:
    cfg = json.loads((folder / "default.json").read_text())
    bands = []
    for name, shift, div in PRESTO_BANDS:
        entry = {**_registry_band(name), "shift": shift, "div": div}
        if name == "NDVI":  # Presto always derives NDVI from B8 and B4
            entry["key"] = None
        bands.append(entry)
    return {
        "format": "eo-fusion-encoder/1",
        "name": "presto",
        "title": "Presto (pixel time-series encoder)",
        "family": "presto",
        "architecture": {
            "embedding_size": cfg["encoder_embedding_size"],
            "depth": cfg["encoder_depth"],
            "num_heads": cfg["encoder_num_heads"],
            "mlp_ratio": cfg["mlp_ratio"],
            "max_sequence_length": 24,
            "channel_embed_ratio": cfg["channel_embed_ratio"],
            "month_embed_ratio": cfg["month_embed_ratio"],
        },
        "inputs": {
            "summary": "per-pixel monthly series (up to 24 steps): S1 VV/VH, S2 (10 bands), "
            "NDVI, ERA5 (no registry band: masked), SRTM elevation + slope (one token), "
            "Dynamic World class per month (optional), location (required)",
            "units": "S1 backscatter in dB (registry linear -> 10 log10), S2 as DN "
            "(reflectance x 10000), elevation m, slope degrees, months 0 = January",
        },
        "bands": bands,
        "groups": [
            {"name": n, "bands": bs, **({"static": True} if n == "SRTM" else {})}
            for n, bs in PRESTO_GROUPS
        ],
        "normalization": "per band (x_model_units - shift) / div, the published fixed values "
        "(presto/dataops/pipelines/s1_s2_era5_srtm.py ADD_BY / DIVIDE_BY)",
        "license": {"spdx": "MIT", "file": "LICENSE"},
        "citation": PRESTO_CITATION,
        "source": {
            "repository": "https://github.com/nasaharvest/presto",
            "commit": PRESTO_COMMIT,
            "files": ["data/default_model.pt", "config/default.json"],
        },
    }


def presto_weights(folder: Path) -> dict[str, torch.Tensor]:
    sd = torch.load(folder / "default_model.pt", map_location="cpu", weights_only=True)
    return {k[len("encoder.") :]: v.contiguous() for k, v in sd.items() if k.startswith("encoder.")}


# ------------------------------------------------------------------------------------------------


def write(name: str, card: dict[str, Any], weights: dict[str, torch.Tensor], lic: Path) -> Path:
    out = OUT / name
    out.mkdir(parents=True, exist_ok=True)
    path = out / "model.safetensors"
    save_file(dict(sorted(weights.items())), str(path), metadata={"format": "pt"})
    path.chmod(0o644)
    card["weights"] = {
        "file": path.name,
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "n_parameters": int(sum(v.numel() for v in weights.values())),
        "bytes": path.stat().st_size,
        "dtype": "float32",
    }
    (out / "model_card.json").write_text(json.dumps(card, indent=1) + "\n")
    shutil.copyfile(lic, out / "LICENSE")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--weights", type=Path, required=True, help="folder with galileo-nano/, presto/"
    )
    ap.add_argument(
        "--galileo-normalization",
        type=Path,
        required=True,
        help="config/normalization.json of the Galileo repository",
    )
    args = ap.parse_args()
    stats = json.loads(args.galileo_normalization.read_text())
    g = args.weights / "galileo-nano"
    p = args.weights / "presto"
    print(write("galileo-nano", galileo_card(g, stats), galileo_weights(g), g / "LICENSE"))
    print(write("presto", presto_card(p), presto_weights(p), p / "LICENSE"))


if __name__ == "__main__":
    main()
