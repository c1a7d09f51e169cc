"""What a raster file holds: modality, band-registry keys and units, from the file itself.

Evidence, in order of trust (the first that decides wins; contradictions are refused):

1. Explicit options: ``--bands`` (registry keys or provider names such as ``VV``/``B04``) and
   ``--modality``.
2. The file's own metadata: band descriptions and band ``NAME`` tags (``B04``, ``VV``,
   ``elevation``, ``red`` or registry keys), colour interpretation (red/green/blue), units
   (GDAL band units or ``UNITS`` tags: ``dB``, ``m``, ``ft``), GDAL tags such as
   ``PROCESSING_LEVEL``/``PRODUCT_TYPE``.
3. Naming conventions: a band token in the name (``_B04``, ``B8A``, ``_B04_10m``), a
   polarisation token (``_VV``), an elevation token (``dem``/``dsm``/``dtm``/``ndsm``/``hag``),
   ``lulc``/``landcover``, ``ndvi``; the product level (``MSIL2A``/``L2A``, ``MSIL1C``/``L1C``)
   and ``rtc``.
4. Layout: 4-band uint8 without descriptions is NAIP-style R, G, B, NIR; 3-band uint8 is RGB;
   13 (L1C) or 12 (L2A) bands named as Sentinel-2 follow ESA's band order.
5. Values: a Sentinel-1 band with negative values is in dB (linear power is never negative);
   integer Sentinel-1 values are amplitude DN; float reflectance in 0-1 has scale 1.

Everything here is pure (no I/O): :func:`infer_raster` takes the file name and its
:class:`~eo_fusion.catalogs.build.raster.RasterInfo`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from eo_fusion.bands import (
    AERIAL_ALIASES,
    ELEVATION_ALIASES,
    LABEL_ALIASES,
    REGISTRY,
    S2_ALIASES,
    SAR_ALIASES,
)
from eo_fusion.catalogs.build.raster import RasterInfo
from eo_fusion.catalogs.normalize import baseline_in_product_id
from eo_fusion.errors import BadInputError
from eo_fusion.modalities import get_modality

_SEP = r"(?:^|(?<=[_\-. ]))"
_END = r"(?=$|[_\-. ])"
_S2_TOKEN = re.compile(_SEP + r"(B(?:0?[1-9]|1[0-2]|8A)|SCL)(?:_(?:10|20|60)m)?" + _END, re.I)
_POL_TOKEN = re.compile(_SEP + r"(VV|VH|HH|HV)" + _END, re.I)
_ELEV_TOKEN = re.compile(_SEP + r"(ndsm|hag|dtm|dem|dsm|srtm|elevation)" + _END, re.I)
_ELEV_PRIORITY = ("ndsm", "hag", "dtm", "dem", "dsm", "srtm", "elevation")
_LABEL_TOKEN = re.compile(_SEP + r"(lulc|landcover|land_cover|worldcover)" + _END, re.I)
_NDVI_TOKEN = re.compile(_SEP + r"(ndvi)" + _END, re.I)

#: ESA band order of a 13-band L1C stack and a 12-band L2A stack (no B10: cirrus is not in L2A).
S2_ORDER_13 = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10",
               "B11", "B12")  # fmt: skip
S2_ORDER_12 = tuple(b for b in S2_ORDER_13 if b != "B10")
_COMMON_RGBN = frozenset({"red", "green", "blue", "nir", "alpha"})
#: Sentinel-2 auxiliary layers and previews, not bands: skipped when the files are inferred.
AUX_TOKEN = re.compile(_SEP + r"(AOT|WVP|TCI|PVI|CLDPRB|SNWPRB|MSK_\w+|QA60|preview|thumbnail)"
                       + _END, re.I)  # fmt: skip
_AERIAL_RGBN = ("aerial:red", "aerial:green", "aerial:blue", "aerial:nir")

#: Alias tables tried on band names, in order; generic names (``data``, ``map``) left out:
#: they say nothing about a local file.
_NAME_TABLES: tuple[Mapping[str, str], ...] = (
    S2_ALIASES,
    SAR_ALIASES,
    AERIAL_ALIASES,
    {k: v for k, v in ELEVATION_ALIASES.items() if k != "data"},
    {k: v for k, v in LABEL_ALIASES.items() if k not in ("data", "map")},
    {"ndvi": "index:ndvi"},
)
_UNITS = {"db": "dB", "decibel": "dB", "decibels": "dB", "m": "m", "metre": "m", "metres": "m",
          "meter": "m", "meters": "m", "linear": "linear", "amplitude": "amplitude",
          "reflectance": "reflectance", "1": "1", "fraction": "fraction", "degree": "degree",
          "degrees": "degree"}  # fmt: skip
#: Elevation units converted to metres by a scale: international and US survey foot.
_FEET = {"ft": 0.3048, "foot": 0.3048, "feet": 0.3048, "us-ft": 1200 / 3937,
         "us survey foot": 1200 / 3937, "ftus": 1200 / 3937}  # fmt: skip
_MODALITY_OF_ELEVATION = {"dem": "dem", "dsm": "dsm", "dtm": "dtm", "ndsm": "dsm",
                          "slope": "dem", "aspect": "dem"}  # fmt: skip
_MODALITY_OF_FAMILY = {"aerial": "aerial", "label": "labels", "index": "ndvi"}


@dataclass(frozen=True)
class Inference:
    """What :func:`infer_raster` found for one file.

    Attributes:
        modality: modality name (registry).
        band_keys: registry key per band (``None``: unplaced).
        group: acquisition key: the name without its band/polarisation token (per-band files
            of one acquisition share it); for a multi-band file, its stem.
        asset_key: asset key within the item (``B04``, ``vv``, ``data``).
        units / scale / offset / nodata: encoding for every band (``None``: registry default).
        properties: item properties learnt from the file (``s2:processing_baseline``).
        notes: things the user should know (assumptions made), logged as warnings.
    """

    modality: str
    band_keys: tuple[str | None, ...]
    group: str
    asset_key: str
    units: str | None = None
    scale: float | None = None
    offset: float | None = None
    nodata: float | None = None
    properties: Mapping[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()


def normalise_units(text: str | None) -> str | None:
    """A unit spelling as the registry writes it (``decibels`` -> ``dB``); others unchanged."""
    if not text or not text.strip():
        return None
    return _UNITS.get(text.strip().lower(), text.strip())


def resolve_band_option(text: str) -> str | None:
    """One ``--bands`` entry as a registry key: a key, a provider name (``VV``, ``B04``,
    ``red``) or ``-`` (unplaced, ``None``).

    Raises:
        BadInputError: a name no table knows (the message lists the key families).
    """
    name = text.strip()
    if name in ("-", ""):
        return None
    if name in REGISTRY:
        return name
    for table in _NAME_TABLES:
        key = table.get(name.lower())
        if key:
            return key
    raise BadInputError(
        f"--bands: '{name}' is neither a band-registry key nor a band name I know",
        fix="use registry keys such as s2:B04, s1:VV, elevation:dem, aerial:red "
        "(docs/catalogs.md, Band registry), or '-' to leave a band unplaced",
    )


def _key_of_name(name: str | None) -> str | None:
    if not name:
        return None
    name = name.strip()
    return name if name in REGISTRY else resolve_or_none(name)


def resolve_or_none(name: str) -> str | None:
    """Registry key of a band name via the alias tables, or ``None``."""
    for table in _NAME_TABLES:
        key = table.get(name.lower())
        if key:
            return key
    return None


def _keys_from_metadata(info: RasterInfo) -> list[str | None]:
    keys: list[str | None] = []
    for i in range(info.count):
        tags = info.band_tags[i] if i < len(info.band_tags) else {}
        names = [info.descriptions[i], tags.get("NAME"), tags.get("BAND_NAME"), tags.get("name")]
        keys.append(next((k for k in map(_key_of_name, names) if k), None))
    colours = {"red": "aerial:red", "green": "aerial:green", "blue": "aerial:blue"}
    if not any(keys) and {"red", "green", "blue"} <= set(info.colorinterp):
        keys = [colours.get(c) for c in info.colorinterp]
    descs = {str(d).strip().lower() for d in info.descriptions if d}
    if info.dtype == "uint8" and descs and descs <= _COMMON_RGBN:
        # "Red, Green, Blue, NIR" on 8-bit data is an aerial image, not Sentinel-2 DN
        keys = [
            AERIAL_ALIASES.get(str(d).strip().lower()) if d else None for d in info.descriptions
        ]
    return keys


def _keys_from_name(stem: str, info: RasterInfo) -> list[str | None]:
    """Keys from naming conventions and layout (see module doc, 3-4)."""
    upper = stem.upper()
    if info.count == 1:
        for pattern, table in ((_S2_TOKEN, S2_ALIASES), (_POL_TOKEN, SAR_ALIASES)):
            m = pattern.search(stem)
            if m:
                return [table.get(m.group(1).lower())]
        if resolve_or_none(stem):  # the name is the band: red.tif, nir08.tif, B04.tif, vv.tif
            return [resolve_or_none(stem)]
        for pattern, key in ((_LABEL_TOKEN, "label:landcover"), (_NDVI_TOKEN, "index:ndvi")):
            if pattern.search(stem):
                return [key]
        tokens = {t.lower() for t in _ELEV_TOKEN.findall(stem)}
        for token in _ELEV_PRIORITY:  # Copernicus_DSM_..._DEM is the DEM product
            if token in tokens:
                return [ELEVATION_ALIASES.get(token, "elevation:dem")]
        return [None]
    s2ish = bool(re.search(r"S2[AB]?_|MSIL|SENTINEL-?2|L1C|L2A", upper))
    if s2ish and info.count == 13:
        return [f"s2:{b}" for b in S2_ORDER_13]
    if s2ish and info.count == 12:
        return [f"s2:{b}" for b in S2_ORDER_12]
    if info.dtype == "uint8" and info.count in (3, 4):
        return list(_AERIAL_RGBN[: info.count])
    return [None] * info.count


def _s2_level(stem: str, info: RasterInfo, keys: Sequence[str | None]) -> str | None:
    text = " ".join([stem, *(info.tags.get(k, "") for k in ("PROCESSING_LEVEL", "PRODUCT_TYPE"))])
    upper = text.upper()
    if re.search(r"MSIL2A|MSI2A|L2A|LEVEL-2A|BOA", upper) or "s2:SCL" in keys:
        return "s2-l2a"
    if re.search(r"MSIL1C|MSI1C|L1C|LEVEL-1C|TOA", upper):
        return "s2-l1c"
    return None


def _modality_of(keys: Sequence[str | None], stem: str, info: RasterInfo, where: str) -> str:
    families = sorted({k.split(":", 1)[0] for k in keys if k})
    if len(families) > 1:
        raise BadInputError(
            f"{where}: bands of several modalities in one file ({', '.join(families)})",
            fix="build it with --modality and --bands naming the bands of one modality "
            "('-' for the others)",
        )
    fam = families[0]
    if fam == "s2":
        level = _s2_level(stem, info, keys)
        if level is None:
            raise BadInputError(
                f"{where}: Sentinel-2 bands, but neither the name nor the tags say L2A or L1C",
                fix="pass --modality s2-l2a or --modality s2-l1c",
            )
        return level
    if fam == "s1":
        return "s1-rtc" if re.search(_SEP + "rtc" + _END, stem, re.I) else "s1-grd"
    if fam == "elevation":
        first = next(k for k in keys if k)
        return _MODALITY_OF_ELEVATION.get(first.split(":", 1)[1], "dem")
    return _MODALITY_OF_FAMILY.get(fam, fam)


def _group(stem: str, count: int) -> tuple[str, str]:
    """(acquisition key, asset key) of a file: the stem without its band token; ``""`` when
    the name is the band alone (``B04.tif``, ``red.tif``: the folder names the acquisition)."""
    if count == 1 and resolve_or_none(stem):
        return "", stem
    if count == 1:
        for pattern in (_S2_TOKEN, _POL_TOKEN):
            m = pattern.search(stem)
            if m:
                cut = max(0, m.start() - 1)  # the token and the separator before it
                rest = (stem[:cut] + stem[m.end() :]).strip("_-. ")
                return rest, m.group(1).upper()
    return stem, "data"


def infer_raster(
    stem: str,
    info: RasterInfo,
    *,
    where: str,
    modality: str | None = None,
    band_keys: Sequence[str | None] | None = None,
    units: str | None = None,
) -> Inference:
    """Modality, band keys and encoding of one raster (see module doc for the evidence).

    Args:
        stem: the file name without its suffix (naming conventions are read from it).
        info: the file's metadata.
        where: the file, for messages.
        modality / band_keys / units: explicit options (``band_keys`` already resolved to
            registry keys, ``None`` for unplaced bands).

    Raises:
        BadInputError: nothing tells what the bands are, options contradict the file or each
            other, or a file mixes modalities.
    """
    keys = _choose_keys(stem, info, where, modality, band_keys)
    hints = f"{where} {stem}"  # the folders too: S2A_MSIL2A_..._N0400_....SAFE/.../B04_10m.jp2
    mod = modality or _modality_of(keys, hints, info, where)
    _check_family(mod, keys, where, explicit=bool(modality or band_keys))
    group, asset_key = _group(stem, info.count)
    enc = _encoding(mod, info, keys, hints, units, where)
    return Inference(modality=mod, band_keys=tuple(keys), group=group, asset_key=asset_key, **enc)


def _choose_keys(
    stem: str,
    info: RasterInfo,
    where: str,
    modality: str | None,
    band_keys: Sequence[str | None] | None,
) -> list[str | None]:
    if band_keys is not None:
        if len(band_keys) != info.count:
            raise BadInputError(
                f"{where}: --bands gives {len(band_keys)} keys for {info.count} band(s)",
                fix=f"give {info.count} comma-separated keys ('-' for bands to leave unplaced), "
                "or build files with other band counts separately",
            )
        return list(band_keys)
    keys = _keys_from_metadata(info)
    if not any(keys):
        keys = _keys_from_name(stem, info)
    if not any(keys) and modality and info.count == 1:
        mdef = get_modality(modality)
        keys = [mdef.single_band_keys.get(modality)]
    if not any(keys):
        looked = "band descriptions, band tags, colour interpretation, the file name"
        raise BadInputError(
            f"{where}: cannot tell what its {info.count} band(s) are (looked at: {looked})",
            fix="pass --bands (e.g. --bands s1:VV or --bands VV) and, if needed, --modality",
        )
    return keys


def _check_family(mod: str, keys: Sequence[str | None], where: str, *, explicit: bool) -> None:
    if mod in ("lidar", "osm"):
        raise BadInputError(
            f"{where}: a raster cannot be modality {mod}",
            fix=f"{mod} items are built from "
            + ("LAS/LAZ files" if mod == "lidar" else "OSM extracts (.osm.pbf, .osm, .osm.bz2)"),
        )
    mdef = get_modality(mod)
    wrong = [k for k in keys if k and k.split(":", 1)[0] != mdef.band_family]
    if wrong:
        origin = "--bands" if explicit else "the file's bands"
        raise BadInputError(
            f"{where}: {origin} ({', '.join(wrong)}) do not belong to modality {mod} "
            f"(its keys are {mdef.band_family}:...)",
            fix="make --modality and --bands agree, or leave one out so it is inferred",
        )


def _encoding(
    mod: str,
    info: RasterInfo,
    keys: Sequence[str | None],
    stem: str,
    units: str | None,
    where: str,
) -> dict[str, Any]:
    declared = units or next((u for u in info.band_units if u), None)
    family = get_modality(mod).family
    if family == "s1":
        return _sar_encoding(info, declared, where)
    if family == "elevation":
        return _elevation_encoding(declared, where)
    if family == "s2":
        return _s2_encoding(info, stem, where)
    if family == "aerial" and info.dtype == "uint16":
        note = f"{where}: 16-bit aerial image: brightness = DN / 65535 assumed"
        return {"scale": 1 / 65535, "notes": (note,)}
    return {"units": normalise_units(declared)} if declared else {}


def _sar_encoding(info: RasterInfo, declared: str | None, where: str) -> dict[str, Any]:
    unit = normalise_units(declared)
    negative = info.value_min is not None and info.value_min < 0
    if unit in ("linear", "amplitude") and negative:
        raise BadInputError(
            f"{where}: declared {unit} but it has negative values (min {info.value_min:.2f})",
            fix="values below 0 are dB: pass --units dB",
        )
    if unit:
        return {"units": unit}
    if negative:
        return {"units": "dB", "notes": (f"{where}: negative backscatter values: read as dB",)}
    if info.dtype.startswith(("uint", "int")):
        note = f"{where}: integer backscatter: read as amplitude DN (needs calibration)"
        return {"units": "amplitude", "notes": (note,)}
    note = f"{where}: no unit and no negative values: read as linear power (else pass --units dB)"
    return {"units": "linear", "notes": (note,)}


def _elevation_encoding(declared: str | None, where: str) -> dict[str, Any]:
    if declared and declared.strip().lower() in _FEET:
        factor = _FEET[declared.strip().lower()]
        note = f"{where}: heights in {declared}: converted to metres (scale {factor:.7f})"
        return {"units": "m", "scale": factor, "notes": (note,)}
    unit = normalise_units(declared) or "m"
    if unit != "m":
        raise BadInputError(
            f"{where}: elevation in '{declared}' is not supported",
            fix="elevation must be in metres or feet (--units m or --units ft)",
        )
    return {"units": "m"}


def _s2_encoding(info: RasterInfo, stem: str, where: str) -> dict[str, Any]:
    if info.dtype.startswith("float"):
        dn = info.value_median is not None and info.value_median > 2.0
        return {"units": "reflectance", "scale": 1e-4 if dn else 1.0, "offset": 0.0}
    out: dict[str, Any] = {"units": "reflectance"}
    if info.nodata is None:
        out["nodata"] = 0.0  # ESA products: DN 0 is no data
    pb = baseline_in_product_id(stem)
    if pb is None:
        out["notes"] = (
            f"{where}: processing baseline unknown (no _Nxxyy_ in the name): no -0.1 offset; "
            "data of baseline 04.00 or later (from 2022-01-25) would be 0.1 too bright",
        )
        out["offset"] = 0.0
        return out
    out["properties"] = {"s2:processing_baseline": pb}
    out["offset"] = -0.1 if float(pb) >= 4.0 else 0.0
    return out
