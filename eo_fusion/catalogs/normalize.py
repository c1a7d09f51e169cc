"""STAC item -> :class:`NormalizedItem`: every provider quirk is absorbed here and nowhere else.

What is read from an item, in order of trust:

1. Band metadata: STAC 1.1 ``bands`` (asset or item level), else ``eo:bands`` and
   ``raster:bands`` (STAC 1.0 extensions). A band whose ``name`` is already a registry key (the
   local builder writes them) is taken as is.
2. Provider alias tables (:data:`eo_fusion.bands.S2_ALIASES`, ...) on the band name, the asset key
   and the common name, then the declared centre wavelength.
3. Encoding: ``scale``/``offset``/``nodata``/``unit`` from the band's raster metadata, else the
   registry defaults.

The Sentinel-2 processing-baseline 04.00 radiometric offset (DN shifted by +1000, so reflectance
= DN * 1e-4 - 0.1) is decided from the item's own metadata, never from its date; see
:func:`s2_reflectance_offset`.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pystac

from eo_fusion.bands import REGISTRY, BandSpec, band_for_wavelength
from eo_fusion.catalogs.items import BandAsset, NormalizedItem
from eo_fusion.errors import CatalogError
from eo_fusion.modalities import REGISTRY as MODALITY_REGISTRY
from eo_fusion.modalities import find_modality, modality_names

log = logging.getLogger(__name__)

#: Every modality name an item can have (from the modality registry, :mod:`eo_fusion.modalities`).
MODALITIES = modality_names()

#: Property the local builder writes so that local items say their modality themselves.
MODALITY_PROPERTY = "eo_fusion:modality"

#: Asset keys that are derived products duplicating real bands (true-colour composites, previews).
_DERIVED_KEYS = {"visual", "tci", "tci_10m", "preview", "rendered_preview", "thumbnail"}

#: Asset keys that are pixel data whatever their roles say (Landsat ``qa_pixel`` has only the
#: roles cloud/cloud-shadow/snow-ice/water-mask on Earth Search and Planetary Computer).
_MASK_ASSET_KEYS = {"qa_pixel"}

#: Landsat Collection 2 Level-2 product ids: LC08_L2SP_..., LT05_L2SR_...
_LANDSAT_L2_ID = re.compile(r"^L[CTE]0\d_L2S[PR]_", re.IGNORECASE)

#: Vertical datum of elevation collections whose items do not declare one (provider docs:
#: Copernicus DEM GLO-30/GLO-90 heights are orthometric, EGM2008 geoid; NASADEM EGM96).
VERTICAL_DATUMS: tuple[tuple[str, str], ...] = (("cop-dem", "EGM2008"), ("nasadem", "EGM96"))
VERTICAL_DATUM_PROPERTY = "eo_fusion:vertical_datum"

# Baseline in a product id: S2A_MSIL2A_20220126T..._N0400_R... -> "04.00".
_PB_IN_ID = re.compile(r"_N(\d{2})(\d{2})_")

#: (collection id prefix, modality) pairs of every registry family.
_COLLECTION_HINTS: tuple[tuple[str, str], ...] = tuple(
    hint for mdef in MODALITY_REGISTRY for hint in mdef.collections
)


def guess_modality(item: pystac.Item) -> str | None:
    """Modality from the item's own metadata (builder property, collection id, product type)."""
    props = item.properties
    declared = props.get(MODALITY_PROPERTY)
    if declared in MODALITIES:
        return str(declared)
    coll = (item.collection_id or "").lower()
    for hint, modality in _COLLECTION_HINTS:
        if coll.startswith(hint):
            return modality
    ptype = str(props.get("s2:product_type") or props.get("product:type") or "").upper()
    # ESA product types are S2MSI2A / S2MSI1C (CDSE product:type, s2:product_type); product
    # names and some catalogs say MSIL2A / L1C.
    if "L2A" in ptype or ptype.startswith("S2MSI2A"):
        return "s2-l2a"
    if "L1C" in ptype or ptype.startswith("S2MSI1C"):
        return "s2-l1c"
    if props.get("sar:product_type") == "GRD" or "sar:polarizations" in props:
        return "s1-rtc" if "rtc" in coll else "s1-grd"
    if _LANDSAT_L2_ID.match(item.id) or props.get("landsat:correction") in ("L2SP", "L2SR"):
        return "landsat-c2-l2"
    return None


def _parse_baseline(value: Any) -> float | None:
    try:
        return float(str(value).strip())
    except (TypeError, ValueError):
        return None


def processing_baseline(item: pystac.Item) -> float | None:
    """The Sentinel-2 processing baseline (e.g. 4.0) from the item's metadata, or ``None``.

    Looks at ``s2:processing_baseline`` (Earth Search, Planetary Computer), ``processing:version``
    (CDSE), legacy ``sentinel:processing_baseline``, then the ``_Nxxyy_`` field of the product id.
    """
    props = item.properties
    for key in ("s2:processing_baseline", "processing:version", "sentinel:processing_baseline"):
        pb = _parse_baseline(props.get(key))
        if pb is not None:
            return pb
    for text in (
        props.get("s2:product_uri"),
        props.get("s2:product_id"),
        props.get("sentinel:product_id"),
        item.id,
    ):
        pb_text = baseline_in_product_id(str(text or ""))
        if pb_text is not None:
            return float(pb_text)
    return None


def baseline_in_product_id(product_id: str) -> str | None:
    """The processing baseline written in an ESA product id (``_N0400_`` -> ``"04.00"``)."""
    m = _PB_IN_ID.search(product_id)
    return f"{m.group(1)}.{m.group(2)}" if m else None


def s2_reflectance_offset(
    item: pystac.Item, declared_offset: float | None, scale: float
) -> tuple[float, str]:
    """Offset (in reflectance units) to add after scaling a Sentinel-2 band, and why.

    Rules, first match wins:

    1. Earth Search's flag ``earthsearch:boa_offset_applied`` (legacy
       ``sentinel:boa_offset_applied``) says whether Earth Search already removed the baseline
       >= 04.00 shift from the stored values when it made the COGs: true -> 0, whatever
       ``raster:bands`` declares (its declared -0.1 would be applied twice: Element84/earth-search
       issue #71); false -> the stored values are ESA's, so the baseline decides (rule 3).
    2. An offset declared in the band's raster metadata (CDSE, Earth Search c1, local items).
    3. The processing baseline: >= 04.00 -> -1000 DN, older -> 0.
    4. Unknown: 0 (reason starts with ``unknown``; :func:`normalize_item` logs a warning naming
       the item). Never guessed from the date.
    """
    shift = -1000.0 * scale
    props = item.properties
    pb = processing_baseline(item)
    for flag in ("earthsearch:boa_offset_applied", "sentinel:boa_offset_applied"):
        if props.get(flag) is None:
            continue
        if bool(props[flag]):
            return 0.0, f"{flag}=true: offset already removed from the stored values"
        if pb is not None:
            return (shift if pb >= 4.0 else 0.0), f"{flag}=false, baseline {pb:05.2f}"
        break  # flag false but no baseline: the declared offset decides
    if declared_offset is not None:
        return declared_offset, "raster offset declared by the item"
    if pb is not None:
        return (shift, f"baseline {pb:05.2f} >= 04.00") if pb >= 4.0 else (0.0, f"baseline {pb}")
    return 0.0, "unknown baseline: no offset"


#: Band fields that STAC 1.1 hoists to the asset when every band shares them (common metadata
#: without a prefix; extension fields keep theirs: ``raster:scale``, ``eo:center_wavelength``).
_ASSET_BAND_FIELDS = ("nodata", "data_type", "unit", "statistics")
_ASSET_BAND_PREFIXES = ("raster:", "eo:", "classification:")
_ASSET_NOT_BAND_FIELDS = {"eo:bands", "raster:bands", "eo:cloud_cover", "eo:snow_cover"}


def _unprefixed(d: Mapping[str, Any]) -> dict[str, Any]:
    """STAC 1.1 band fields with their extension prefix dropped (``raster:scale`` -> ``scale``)."""
    out = dict(d)
    for k in list(out):
        if ":" in k:
            out.setdefault(k.split(":", 1)[1], out[k])
    return out


def _asset_band_defaults(extra: Mapping[str, Any]) -> dict[str, Any]:
    """Band fields given once at asset level (CDSE: ``raster:scale``/``raster:offset``/``nodata``
    on the asset, only names and wavelengths in ``bands``)."""
    d = {
        k: v
        for k, v in extra.items()
        if (k in _ASSET_BAND_FIELDS or k.startswith(_ASSET_BAND_PREFIXES))
        and k not in _ASSET_NOT_BAND_FIELDS
    }
    return _unprefixed(d)


def _band_dicts(asset: pystac.Asset) -> list[dict[str, Any]]:
    """Per-band metadata of an asset, merging STAC 1.1 ``bands`` with 1.0 eo/raster bands.

    Fields declared at asset level (STAC 1.1 lets fields shared by all bands move there) are
    defaults for every band; a band's own value wins.
    """
    extra = asset.extra_fields
    defaults = _asset_band_defaults(extra)
    if isinstance(extra.get("bands"), list) and extra["bands"]:
        return [{**defaults, **_unprefixed(b)} for b in extra["bands"] if isinstance(b, dict)]
    eo = extra.get("eo:bands") or []
    raster = extra.get("raster:bands") or []
    n = max(len(eo), len(raster))
    bands = [
        {
            **defaults,
            **(raster[i] if i < len(raster) else {}),
            **(eo[i] if i < len(eo) else {}),
        }
        for i in range(n)
    ]
    if not bands and defaults:
        return [defaults]  # single-band asset described only at asset level
    return bands


def _family_aliases(modality: str, item: pystac.Item | None) -> tuple[Mapping[str, str], ...]:
    mdef = find_modality(modality)
    if mdef is None:
        return ()
    return mdef.aliases_for(item.properties, item.id) if item is not None else mdef.aliases


def place_band(
    names: Iterable[str | None],
    modality: str,
    wavelength_um: Any,
    item: pystac.Item | None = None,
) -> str | None:
    """Registry key for a band, from its candidate names, then its centre wavelength.

    ``item`` (its platform/instruments/id) picks the sensor's alias table for families whose
    band names depend on the sensor (Landsat); without it only the family's common tables.
    The catalog builder uses the same rules, so a band is placed alike on the way in and out.
    """
    candidates = [n for n in names if n]
    for name in candidates:
        if name in REGISTRY:
            return name
    for table in _family_aliases(modality, item):
        for name in candidates:
            key = table.get(name.lower())
            if key:
                return key
    mdef = find_modality(modality)
    if mdef and mdef.place_by_wavelength and isinstance(wavelength_um, int | float):
        return band_for_wavelength(float(wavelength_um) * 1000.0)
    return None


def _grid(item: pystac.Item, asset: pystac.Asset) -> tuple[str | None, tuple | None, tuple | None]:
    """(crs, transform, shape) of an asset, falling back to the item's projection fields."""

    def pick(*keys: str) -> Any:
        for src in (asset.extra_fields, item.properties):
            for k in keys:
                if src.get(k) is not None:
                    return src[k]
        return None

    crs: str | None = None
    code = pick("proj:code")
    epsg = pick("proj:epsg")
    if code:
        crs = str(code)
    elif epsg:
        crs = f"EPSG:{int(epsg)}"
    else:
        wkt = pick("proj:wkt2")
        crs = str(wkt) if wkt else None
    tr = pick("proj:transform")
    transform = tuple(float(v) for v in tr[:6]) if tr and len(tr) >= 6 else None
    sh = pick("proj:shape")
    shape = (int(sh[0]), int(sh[1])) if sh and len(sh) == 2 else None
    return crs, transform, shape


def _is_data_asset(key: str, asset: pystac.Asset) -> bool:
    roles = set(asset.roles or [])
    if key.lower() in _DERIVED_KEYS:
        return False
    if key.lower() in _MASK_ASSET_KEYS:
        return True
    media = (asset.media_type or "").lower()
    # Roles without "data" (thumbnail, overview, metadata, tiles, visual...) are not pixel bands.
    if roles and "data" not in roles:
        return False
    return not media or any(t in media for t in ("tiff", "jp2", "jpeg", "png", "netcdf", "zarr"))


#: Unit spellings used by providers -> the registry's (UCUM ``m`` for metres; ``dB`` for decibels).
_UNIT_ALIASES = {
    "m": "m",
    "metre": "m",
    "metres": "m",
    "meter": "m",
    "meters": "m",
    "db": "dB",
    "decibel": "dB",
    "decibels": "dB",
    "kelvin": "K",
    "k": "K",
}


def _encode(
    item: pystac.Item, spec: BandSpec, band: Mapping[str, Any], modality: str, notes: set[str]
) -> BandSpec:
    """The registry spec with this item's scale/offset/nodata/units/resolution."""
    scale = band.get("scale")
    scale = float(scale) if isinstance(scale, int | float) else None
    declared = band.get("offset")
    declared = float(declared) if isinstance(declared, int | float) else None
    nodata = band.get("nodata")
    nodata = float(nodata) if isinstance(nodata, int | float) else None
    out = spec.with_encoding(scale=scale, nodata=nodata)
    if spec.family == "s2" and spec.kind == "reflectance":
        if str(band.get("data_type", "")).startswith("float") and scale is None:
            out = out.with_encoding(scale=1.0)  # already reflectance (e.g. float exports)
            declared = 0.0 if declared is None else declared
        offset, why = s2_reflectance_offset(item, declared, out.scale)
        out = out.with_encoding(offset=offset)
        notes.add(why)
    elif declared is not None:
        out = out.with_encoding(offset=declared)
    units = band.get("unit")
    if isinstance(units, str):
        units = _UNIT_ALIASES.get(units.strip().lower(), units.strip())
    if spec.kind == "sar" and not units:
        units = "amplitude" if modality == "s1-grd" else "linear"
    res = band.get("spatial_resolution")
    changes: dict[str, Any] = {}
    if units:
        changes["units"] = str(units)
    if isinstance(res, int | float):
        changes["resolution_m"] = float(res)
    return replace(out, **changes) if changes else out


def _datetime_of(item: pystac.Item) -> datetime:
    dt = item.datetime
    if dt is None:
        start = item.properties.get("start_datetime")
        if not start:
            raise CatalogError(
                f"item {item.id} has neither datetime nor start_datetime",
                fix="give the item a datetime (the builder's --datetime option does this)",
            )
        dt = datetime.fromisoformat(str(start).replace("Z", "+00:00"))
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def normalize_item(
    item: pystac.Item | Mapping[str, Any],
    *,
    modality: str | None = None,
    sign: Callable[[str], str] | None = None,
) -> NormalizedItem:
    """Reduce a STAC item to a :class:`NormalizedItem` with bands keyed by the registry.

    Args:
        item: a pystac Item or its GeoJSON dict.
        modality: the modality it was searched for; guessed from the item when ``None``.
        sign: function applied to every band href (Planetary Computer URL signing).

    Raises:
        CatalogError: the modality cannot be determined or the item has no datetime.
    """
    item = _as_item(item)
    modality = modality or guess_modality(item)
    if modality not in MODALITIES:
        raise CatalogError(
            f"item {item.id} (collection {item.collection_id!r}): cannot tell its modality",
            fix=f"pass modality= one of {', '.join(MODALITIES)} or set '{MODALITY_PROPERTY}'",
        )
    notes: set[str] = set()  # why each S2 offset was chosen (logged once per item)
    candidates, unplaced, other = _place_assets(item, modality, sign, notes)
    bands = _best_candidates(item, candidates, other)
    if sign is not None:
        # The S1 calibration annotations are read like bands (Planetary Computer needs a token).
        other = {k: sign(v) if _is_annotation(k) else v for k, v in other.items()}
    bbox = tuple(float(v) for v in (item.bbox or ()))
    if len(bbox) != 4:
        raise CatalogError(f"item {item.id} has no 2D bbox", fix="add a bbox to the item")
    geometry = item.geometry or _bbox_polygon(bbox)
    if any(n.startswith("unknown") for n in notes):
        log.warning(
            "item %s: Sentinel-2 processing baseline unknown and no offset declared; assuming no "
            "radiometric offset (add s2:processing_baseline or a raster:bands offset to the item)",
            item.id,
        )
    if unplaced:
        log.info("item %s: assets not placed in the band registry: %s", item.id, unplaced)
    return NormalizedItem(
        id=item.id,
        collection=item.collection_id or "",
        modality=modality,
        datetime=_datetime_of(item),
        bbox=bbox,  # type: ignore[arg-type]
        geometry=dict(geometry),
        bands=bands,
        properties=_normalized_properties(item),
        unplaced_assets=tuple(unplaced),
        other_assets=other,
    )


#: Registry key -> every asset that carries that band, each with its preference rank.
_Candidates = dict[str, list[tuple[tuple[bool, float, int], BandAsset]]]


def _place_assets(
    item: pystac.Item,
    modality: str,
    sign: Callable[[str], str] | None,
    notes: set[str],
) -> tuple[_Candidates, list[str], dict[str, str]]:
    """Sort the item's assets: data assets placed in the registry (``candidates``), data assets
    that could not be placed (``unplaced`` keys) and non-data assets (``other``: key -> href)."""
    candidates: _Candidates = {}
    unplaced: list[str] = []
    other: dict[str, str] = {}
    for order, (key, asset) in enumerate(item.assets.items()):
        href = asset.get_absolute_href() or asset.href
        if not _is_data_asset(key, asset):
            other[key] = href
            continue
        placed = _place_asset(item, key, asset, modality, href, sign, notes)
        if not placed:
            unplaced.append(key)
            continue
        for b in placed:
            candidates.setdefault(b.key, []).append((_preference(key, asset, b, order), b))
    return candidates, unplaced, other


def _best_candidates(
    item: pystac.Item, candidates: _Candidates, other: dict[str, str]
) -> dict[str, BandAsset]:
    """One asset per registry key, the most preferred; the assets left unused go to ``other``.

    Several assets can carry the same band (Earth Search: red + red-jp2; CDSE: B04_10m,
    B04_20m, B04_60m). Keep one per key: COG over JP2, then the native resolution.
    """
    bands: dict[str, BandAsset] = {}
    used: set[str] = set()
    for reg_key, cands in candidates.items():
        best = min(cands, key=lambda c: c[0])[1]
        bands[reg_key] = best
        used.add(best.asset_key)
    for cands in candidates.values():
        for _, b in cands:
            if b.asset_key not in used:
                other.setdefault(b.asset_key, item.assets[b.asset_key].get_absolute_href() or "")
    return bands


def _is_annotation(key: str) -> bool:
    """A Sentinel-1 calibration annotation asset (``schema-calibration-vv``), read by the S1
    reader; other metadata assets are never fetched."""
    k = key.lower()
    return "calibration" in k and "noise" not in k


def _as_item(item: pystac.Item | Mapping[str, Any]) -> pystac.Item:
    """A pystac Item from an Item or its dict (assets without ``href`` dropped, with a warning)."""
    if isinstance(item, pystac.Item):
        return item
    raw = dict(item)
    dropped = drop_assets_without_href(raw)
    if dropped:
        log.warning("item %s: asset(s) without 'href' skipped: %s", raw.get("id", "?"), dropped)
    try:
        return pystac.Item.from_dict(raw, preserve_dict=True)
    except pystac.STACError as e:
        raise CatalogError(
            f"item {raw.get('id', '?')}: not a valid STAC item ({e})",
            fix="give the item a datetime or start_datetime/end_datetime",
        ) from e


def drop_assets_without_href(raw: dict[str, Any]) -> list[str]:
    """Remove (in place) the assets of an item dict that have no string ``href``; their keys.

    pystac refuses such an item outright; one broken asset must not lose the whole item.
    """
    assets = raw.get("assets")
    if not isinstance(assets, dict):
        return []
    bad = [
        k
        for k, a in assets.items()
        if not (isinstance(a, dict) and isinstance(a.get("href"), str) and a["href"])
    ]
    if bad:
        raw["assets"] = {k: a for k, a in assets.items() if k not in bad}
    return bad


def _normalized_properties(item: pystac.Item) -> dict[str, Any]:
    """The item's properties, with the values other modules filter on in one spelling.

    ``sat:orbit_state`` lower-cased (PC/CDSE write ``descending``, some catalogs ``DESCENDING``);
    the vertical datum of elevation collections that do not declare one.
    """
    props = dict(item.properties)
    orbit = props.get("sat:orbit_state")
    if isinstance(orbit, str):
        props["sat:orbit_state"] = orbit.strip().lower()
    coll = (item.collection_id or "").lower()
    for prefix, datum in VERTICAL_DATUMS:
        if coll.startswith(prefix):
            props.setdefault(VERTICAL_DATUM_PROPERTY, datum)
    return props


def _place_asset(
    item: pystac.Item,
    key: str,
    asset: pystac.Asset,
    modality: str,
    href: str,
    sign: Callable[[str], str] | None,
    notes: set[str],
) -> list[BandAsset]:
    band_meta = _band_dicts(asset) or [{}]
    crs, transform, shape = _grid(item, asset)
    out: list[BandAsset] = []
    single = len(band_meta) == 1
    for i, meta in enumerate(band_meta, start=1):
        names = [meta.get("name")]
        if single:
            names.append(key)
            names.append(re.sub(r"-jp2$", "", key.lower()))
        names.append(meta.get("common_name"))
        if MODALITY_PROPERTY in item.properties:
            # Items written by the eo-fusion builder name bands by registry key; other names
            # are deliberately unplaced bands (e.g. other months of a multi-date file).
            reg_key = meta.get("name") if meta.get("name") in REGISTRY else None
        else:
            reg_key = place_band(names, modality, meta.get("center_wavelength"), item)
        if reg_key is None and single:
            reg_key = _single_band_key(modality)
        if reg_key is None:
            if not single:
                continue  # other bands of the file may still place; all-unplaced -> reported
            return []
        spec = _encode(item, REGISTRY[reg_key], meta, modality, notes)
        gsd = asset.extra_fields.get("gsd")
        if gsd is None and spec.resolution_m is None:
            # Item-level gsd (NAIP: 0.6 m) only where the registry has no native resolution; for
            # multi-resolution products (S2) it is the finest band's, not this one's.
            gsd = item.properties.get("gsd")
        if isinstance(gsd, int | float) and "spatial_resolution" not in meta:
            spec = replace(spec, resolution_m=float(gsd))
        out.append(
            BandAsset(
                key=reg_key,
                asset_key=key,
                href=sign(href) if sign else href,
                band_index=i,
                spec=spec,
                crs=crs,
                transform=transform,
                shape=shape,
            )
        )
    return out


def _single_band_key(modality: str) -> str | None:
    """Registry key of an asset with one unnamed band (a DEM file), from the modality."""
    mdef = find_modality(modality)
    return mdef.single_band_keys.get(modality) if mdef else None


def _is_jp2(key: str, asset: pystac.Asset) -> bool:
    return "jp2" in (asset.media_type or "") or key.lower().endswith("-jp2")


def _preference(
    key: str, asset: pystac.Asset, band: BandAsset, order: int
) -> tuple[bool, float, int]:
    """Sort key among assets carrying the same band: COG first, native resolution, item order."""
    native = REGISTRY[band.key].resolution_m
    res = band.spec.resolution_m
    off = abs(math.log(res / native)) if native and res else 0.0
    return _is_jp2(key, asset), off, order


def _bbox_polygon(b: tuple[float, ...]) -> dict[str, Any]:
    x0, y0, x1, y1 = b
    return {
        "type": "Polygon",
        "coordinates": [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]],
    }
