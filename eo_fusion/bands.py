"""The band registry: the single source of truth for what a band *is*.

Every asset of every supported collection is mapped onto a :class:`BandSpec` with a registry key
(``"<family>:<name>"``, e.g. ``s2:B04``, ``s1:VV``, ``aerial:nir``, ``elevation:dsm``). The
spectrum-aware model consumes these keys (and their wavelengths), never positional band indices.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal

BandKind = Literal[
    "reflectance", "sar", "elevation", "categorical", "osm", "index", "aerial", "temperature"
]


@dataclass(frozen=True)
class BandSpec:
    """What one band measures and how to turn its stored values into physical units.

    Physical value = stored value * ``scale`` + ``offset``; ``nodata`` is a *stored* value.

    Attributes:
        key: registry key, ``"<family>:<name>"``.
        kind: kind of quantity; drives resampling rules and the model's embedding.
        wavelength_nm: centre wavelength in nanometres (``None`` for non-spectral bands).
        bandwidth_nm: full width of the band in nanometres (``None`` for non-spectral bands).
        polarization: SAR polarisation (``VV``, ``VH``, ``HH``, ``HV``) or ``None``.
        units: physical units after scale/offset (``reflectance``, ``dB``, ``linear``, ``m``, ...).
        scale: multiplicative factor from stored to physical values.
        offset: additive term from stored to physical values (after scaling).
        nodata: stored value that marks missing data, or ``None``.
        resolution_m: native ground sampling distance in metres, or ``None`` if unknown.
        description: human-readable name (e.g. "Red", "Narrow NIR").
    """

    key: str
    kind: BandKind
    wavelength_nm: float | None = None
    bandwidth_nm: float | None = None
    polarization: str | None = None
    units: str = ""
    scale: float = 1.0
    offset: float = 0.0
    nodata: float | None = None
    resolution_m: float | None = None
    description: str = ""

    @property
    def family(self) -> str:
        """The part of the key before the colon (``s2``, ``s1``, ``aerial``, ...)."""
        return self.key.split(":", 1)[0]

    @property
    def is_spectral(self) -> bool:
        return self.wavelength_nm is not None

    def with_encoding(
        self,
        *,
        scale: float | None = None,
        offset: float | None = None,
        nodata: float | None = None,
    ) -> BandSpec:
        """Copy with an item's own scale/offset/nodata (registry entries hold the defaults)."""
        return replace(
            self,
            scale=self.scale if scale is None else scale,
            offset=self.offset if offset is None else offset,
            nodata=self.nodata if nodata is None else nodata,
        )


# ------------------------------------------------------------------------------------------------
# The registry tables.
# ------------------------------------------------------------------------------------------------

#: Sentinel-2A MSI band centres and bandwidths (nm) and native resolution (m), as published by ESA
#: in the Sentinel-2 Spectral Response Functions (COPE-GSEG-EOPG-TN-15-0007, v3.0) and the
#: Sentinel-2 MSI User Guide ("Radiometric resolutions / spectral bands" table). Sentinel-2B/C
#: centres differ by at most a few nm; the model keys on wavelength ranges, so S2A values stand
#: for the constellation.
_S2_TABLE: dict[str, tuple[float, float, float, str]] = {
    "B01": (442.7, 21.0, 60.0, "Coastal aerosol"),
    "B02": (492.4, 66.0, 10.0, "Blue"),
    "B03": (559.8, 36.0, 10.0, "Green"),
    "B04": (664.6, 31.0, 10.0, "Red"),
    "B05": (704.1, 15.0, 20.0, "Vegetation red edge 1"),
    "B06": (740.5, 15.0, 20.0, "Vegetation red edge 2"),
    "B07": (782.8, 20.0, 20.0, "Vegetation red edge 3"),
    "B08": (832.8, 106.0, 10.0, "NIR"),
    "B8A": (864.7, 21.0, 20.0, "Narrow NIR"),
    "B09": (945.1, 20.0, 60.0, "Water vapour"),
    "B10": (1373.5, 31.0, 60.0, "SWIR cirrus"),
    "B11": (1613.7, 91.0, 20.0, "SWIR 1"),
    "B12": (2202.4, 175.0, 20.0, "SWIR 2"),
}

#: Broad-band aerial cameras (NAIP's Leica ADS100, typical RGBN frame cameras): approximate centre
#: and width of the red/green/blue/near-infrared ranges (USDA FSA NAIP information sheet). Values
#: are stored as 8-bit DN by most providers, so the scale turns them into a 0-1 brightness, not a
#: calibrated reflectance.
_AERIAL_TABLE: dict[str, tuple[float, float, str]] = {
    "blue": (465.0, 60.0, "Blue"),
    "green": (555.0, 60.0, "Green"),
    "red": (635.0, 32.0, "Red"),
    "nir": (845.0, 74.0, "Near infrared"),
}

#: Landsat Collection 2 Level-2 bands per sensor: band number -> (lower, upper band edge in nm,
#: common name). Edges from USGS, "What are the band designations for the Landsat satellites?"
#: (usgs.gov FAQ) and the Landsat 4-7 / 8-9 Collection 2 Level-2 Science Product Guides
#: (LSDS-1618, LSDS-1619). The centre is the midpoint of the edges; the registry stores it and the
#: full width, so the spectral model places each band by wavelength (TM B4 830 nm is a broad NIR,
#: OLI B5 865 nm a narrow one). Surface temperature bands are listed separately (thermal IR).
_LANDSAT_SR: dict[str, dict[str, tuple[float, float, str]]] = {
    "TM": {  # Landsat 4-5 Thematic Mapper
        "B1": (450.0, 520.0, "blue"),
        "B2": (520.0, 600.0, "green"),
        "B3": (630.0, 690.0, "red"),
        "B4": (760.0, 900.0, "nir08"),
        "B5": (1550.0, 1750.0, "swir16"),
        "B7": (2080.0, 2350.0, "swir22"),
    },
    "ETM": {  # Landsat 7 Enhanced Thematic Mapper Plus
        "B1": (450.0, 520.0, "blue"),
        "B2": (520.0, 600.0, "green"),
        "B3": (630.0, 690.0, "red"),
        "B4": (770.0, 900.0, "nir08"),
        "B5": (1550.0, 1750.0, "swir16"),
        "B7": (2090.0, 2350.0, "swir22"),
    },
    "OLI": {  # Landsat 8-9 Operational Land Imager (OLI, OLI-2)
        "B1": (430.0, 450.0, "coastal"),
        "B2": (450.0, 510.0, "blue"),
        "B3": (530.0, 590.0, "green"),
        "B4": (640.0, 670.0, "red"),
        "B5": (850.0, 880.0, "nir08"),
        "B6": (1570.0, 1650.0, "swir16"),
        "B7": (2110.0, 2290.0, "swir22"),
    },
}
#: Surface temperature band per sensor: (band, lower/upper edge in nm, common name). Not given a
#: ``wavelength_nm`` in the registry: the spectral model has no thermal range and would blend it
#: into SWIR 2; without one the model refuses it by name instead (kind ``temperature``).
_LANDSAT_ST: dict[str, tuple[str, float, float, str]] = {
    "TM": ("B6", 10400.0, 12500.0, "lwir"),
    "ETM": ("B6", 10400.0, 12500.0, "lwir"),
    "OLI": ("B10", 10600.0, 11190.0, "lwir11"),  # TIRS / TIRS-2 band 10
}
#: Collection 2 Level-2 encodings (Science Product Guides, "Scale factors"): SR reflectance =
#: DN * 2.75e-5 - 0.2; ST kelvin = DN * 0.00341802 + 149.0; 0 = fill for both.
LANDSAT_SR_SCALE, LANDSAT_SR_OFFSET = 2.75e-5, -0.2
LANDSAT_ST_SCALE, LANDSAT_ST_OFFSET = 0.00341802, 149.0

#: OSM layers rasterised by the OSM source (``osm:landuse_<value>`` accepts any landuse tag value).
_OSM_LAYERS = ("buildings", "roads_major", "roads_minor", "water")
_OSM_LANDUSE = (
    "residential",
    "commercial",
    "industrial",
    "retail",
    "farmland",
    "forest",
    "grass",
    "meadow",
    "orchard",
    "vineyard",
)


def _add_landsat(reg: dict[str, BandSpec]) -> None:
    for sensor, table in _LANDSAT_SR.items():
        for band, (lo, hi, common) in table.items():
            key = f"landsat:{sensor}_{band}"
            reg[key] = BandSpec(
                key=key,
                kind="reflectance",
                wavelength_nm=(lo + hi) / 2,
                bandwidth_nm=hi - lo,
                units="reflectance",
                scale=LANDSAT_SR_SCALE,
                offset=LANDSAT_SR_OFFSET,
                nodata=0,
                resolution_m=30.0,
                description=f"Landsat {sensor} {band} ({common}) surface reflectance",
            )
    for sensor, (band, lo, hi, _common) in _LANDSAT_ST.items():
        key = f"landsat:{sensor}_{band}"
        reg[key] = BandSpec(
            key=key,
            kind="temperature",
            units="K",
            scale=LANDSAT_ST_SCALE,
            offset=LANDSAT_ST_OFFSET,
            nodata=0,
            resolution_m=30.0,  # delivered resampled to 30 m (native 60-120 m)
            description=f"Landsat {sensor} {band} surface temperature ({lo / 1000:g}-"
            f"{hi / 1000:g} um)",
        )
    # Bit-packed quality flags; never scaled, never interpolated. 1 = fill in QA_PIXEL.
    reg["landsat:QA_PIXEL"] = BandSpec(
        "landsat:QA_PIXEL", "categorical", units="bit index", nodata=1, resolution_m=30.0,
        description="Landsat Collection 2 pixel quality bits (QA_PIXEL)",
    )  # fmt: skip


def _add_s2(reg: dict[str, BandSpec]) -> None:
    for name, (wl, bw, res, desc) in _S2_TABLE.items():
        # Default encoding: L1C/L2A DN with QUANTIFICATION_VALUE 10000, 0 = no data. The
        # processing-baseline offset is item-specific and set during normalisation.
        reg[f"s2:{name}"] = BandSpec(
            key=f"s2:{name}",
            kind="reflectance",
            wavelength_nm=wl,
            bandwidth_nm=bw,
            units="reflectance",
            scale=1e-4,
            nodata=0,
            resolution_m=res,
            description=desc,
        )


def _add_s1(reg: dict[str, BandSpec]) -> None:
    for pol in ("VV", "VH", "HH", "HV"):
        reg[f"s1:{pol}"] = BandSpec(
            key=f"s1:{pol}",
            kind="sar",
            polarization=pol,
            units="linear",
            nodata=0,
            resolution_m=10.0,
            description=f"C-band backscatter, {pol} polarisation",
        )


def _add_aerial(reg: dict[str, BandSpec]) -> None:
    for name, (wl, bw, desc) in _AERIAL_TABLE.items():
        reg[f"aerial:{name}"] = BandSpec(
            key=f"aerial:{name}",
            kind="aerial",
            wavelength_nm=wl,
            bandwidth_nm=bw,
            units="brightness",
            scale=1 / 255,
            description=desc,
        )


def _add_elevation(reg: dict[str, BandSpec]) -> None:
    for name, desc in (
        ("dem", "Digital elevation model (terrain, e.g. Copernicus DEM GLO-30)"),
        ("dsm", "Digital surface model (top of canopy and buildings)"),
        ("dtm", "Digital terrain model (bare earth)"),
        ("ndsm", "Normalised DSM: height above ground (DSM - DTM)"),
    ):
        reg[f"elevation:{name}"] = BandSpec(
            f"elevation:{name}", "elevation", units="m", description=desc
        )
    reg["elevation:slope"] = BandSpec(
        "elevation:slope", "elevation", units="degree", description="Terrain slope"
    )
    reg["elevation:aspect"] = BandSpec(
        "elevation:aspect", "elevation", units="degree", description="Terrain aspect (from north)"
    )


def _build_registry() -> dict[str, BandSpec]:
    # Insertion order is observable (band_keys, "did you mean" lists): keep it stable.
    reg: dict[str, BandSpec] = {}
    _add_s2(reg)
    _add_landsat(reg)
    reg["s2:SCL"] = BandSpec(
        "s2:SCL", "categorical", nodata=0, resolution_m=20.0, description="Scene classification"
    )
    # Computed by the loader (eo_fusion.sources.s2cloud), not read from an asset.
    reg["s2:CLP"] = BandSpec(
        "s2:CLP",
        "index",
        units="probability",
        resolution_m=160.0,
        description="s2cloudless cloud probability (0-1, L1C only)",
    )
    _add_s1(reg)
    _add_aerial(reg)
    _add_elevation(reg)
    for layer in _OSM_LAYERS + tuple(f"landuse_{v}" for v in _OSM_LANDUSE):
        reg[f"osm:{layer}"] = BandSpec(
            f"osm:{layer}", "osm", units="fraction", description=f"OpenStreetMap {layer} coverage"
        )
    reg["label:landcover"] = BandSpec(
        "label:landcover", "categorical", nodata=0, description="Land-cover class id"
    )
    reg["index:ndvi"] = BandSpec(
        "index:ndvi", "index", units="1", description="Normalised difference vegetation index"
    )
    return reg


#: Every known band, by registry key. Read-only by convention; use :func:`get_band`.
REGISTRY: dict[str, BandSpec] = _build_registry()

_OSM_LANDUSE_PREFIX = "osm:landuse_"


def get_band(key: str) -> BandSpec:
    """The registry entry for ``key`` (e.g. ``s2:B04``, ``s1:VV``, ``elevation:dsm``).

    ``osm:landuse_<value>`` is accepted for any OSM landuse value (letters, digits, ``_``).

    Raises:
        BandError: unknown key; the message lists close matches.
    """
    from eo_fusion.errors import BandError

    spec = REGISTRY.get(key)
    if spec is not None:
        return spec
    if key.startswith(_OSM_LANDUSE_PREFIX):
        value = key[len(_OSM_LANDUSE_PREFIX) :]
        if value and value.replace("_", "").isalnum() and value.islower():
            return BandSpec(key, "osm", units="fraction", description=f"OpenStreetMap {value}")
    import difflib

    close = difflib.get_close_matches(key, list(REGISTRY), n=4, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}?" if close else "see docs/catalogs.md for the keys"
    raise BandError(f"unknown band key '{key}'", fix=hint)


def band_keys(family: str | None = None) -> list[str]:
    """All registry keys, optionally only those of one family (``s2``, ``s1``, ...)."""
    return [k for k in REGISTRY if family is None or k.split(":", 1)[0] == family]


# ------------------------------------------------------------------------------------------------
# Provider alias tables: asset keys / band names -> registry keys. Lower-cased on lookup.
# ------------------------------------------------------------------------------------------------

#: Sentinel-2 names used by Earth Search v1 (common names: ``red``, ``nir08``, ``rededge1``),
#: Planetary Computer and CDSE (``B04``, ``B04_10m``), legacy Earth Search v0 and GEE (``B4``).
S2_ALIASES: dict[str, str] = {
    "coastal": "s2:B01",
    "blue": "s2:B02",
    "green": "s2:B03",
    "red": "s2:B04",
    "rededge1": "s2:B05",
    "rededge2": "s2:B06",
    "rededge3": "s2:B07",
    "nir": "s2:B08",
    "nir08": "s2:B8A",
    "nir09": "s2:B09",
    "cirrus": "s2:B10",
    "swir16": "s2:B11",
    "swir22": "s2:B12",
    "scl": "s2:SCL",
}
for _name in _S2_TABLE:
    S2_ALIASES[_name.lower()] = f"s2:{_name}"
    S2_ALIASES[_name.lower().replace("b0", "b")] = f"s2:{_name}"  # B4 / B8A style
    for _res in (10, 20, 60):  # CDSE asset keys carry the resolution: B04_10m
        S2_ALIASES[f"{_name.lower()}_{_res}m"] = f"s2:{_name}"
for _res in (20, 60):
    S2_ALIASES[f"scl_{_res}m"] = "s2:SCL"

SAR_ALIASES: dict[str, str] = {p.lower(): f"s1:{p}" for p in ("VV", "VH", "HH", "HV")}

#: Aerial band names (NAIP eo:bands names are ``Red``, ``Green``, ``Blue``, ``NIR``).
AERIAL_ALIASES: dict[str, str] = {
    "red": "aerial:red",
    "green": "aerial:green",
    "blue": "aerial:blue",
    "nir": "aerial:nir",
    "nir08": "aerial:nir",
}

#: Elevation asset keys (Earth Search cop-dem ``data``; Planetary Computer ``data``/``elevation``).
ELEVATION_ALIASES: dict[str, str] = {
    "dem": "elevation:dem",
    "elevation": "elevation:dem",
    "data": "elevation:dem",
    "dsm": "elevation:dsm",
    "dtm": "elevation:dtm",
    "ndsm": "elevation:ndsm",
    "hag": "elevation:ndsm",
    "slope": "elevation:slope",
    "aspect": "elevation:aspect",
}

#: Land-cover map asset keys (Planetary Computer esa-worldcover ``map``, io-lulc ``data``).
LABEL_ALIASES: dict[str, str] = {
    "map": "label:landcover",
    "landcover": "label:landcover",
    "land_cover": "label:landcover",
    "lulc": "label:landcover",
    "data": "label:landcover",
}


def _landsat_aliases() -> dict[str, dict[str, str]]:
    """Per sensor: every provider spelling of a band -> registry key. Earth Search v1 and
    Planetary Computer use common-name asset keys (``red``, ``nir08``, ``lwir11``, ``qa_pixel``);
    band names are ``OLI_B4``/``TIRS_B10`` (Earth Search), ``OLI-SR_B4``/``TM-ST_B6`` (Planetary
    Computer, stactools-landsat) or the USGS file suffixes ``SR_B4``/``ST_B10``/``QA_PIXEL``."""
    out: dict[str, dict[str, str]] = {}
    for sensor, table in _LANDSAT_SR.items():
        # ("qa" is the ST uncertainty band ST_QA, not QA_PIXEL: deliberately absent.)
        t: dict[str, str] = {"qa_pixel": "landsat:QA_PIXEL"}
        st_band, _, _, st_common = _LANDSAT_ST[sensor]
        bands = [(b, c, "SR") for b, (_, _, c) in table.items()] + [(st_band, st_common, "ST")]
        thermal = "TIRS" if sensor == "OLI" else sensor
        for band, common, product in bands:
            key = f"landsat:{sensor}_{band}"
            inst = thermal if product == "ST" else sensor
            for name in (common, band, f"{product}_{band}", f"{inst}_{band}",
                         f"{sensor}-{product}_{band}", f"{inst}-{product}_{band}"):  # fmt: skip
                t[name.lower()] = key
        out[sensor] = t
    return out


#: Landsat alias tables per sensor (``TM``, ``ETM``, ``OLI``); pick one with :func:`landsat_sensor`.
LANDSAT_ALIASES: dict[str, dict[str, str]] = _landsat_aliases()

_LANDSAT_PLATFORMS = {
    "landsat-4": "TM", "landsat-5": "TM", "landsat-7": "ETM",
    "landsat-8": "OLI", "landsat-9": "OLI",
}  # fmt: skip
_LANDSAT_ID_PREFIX = {"LT04": "TM", "LT05": "TM", "LE07": "ETM", "LC08": "OLI", "LC09": "OLI"}


def landsat_sensor(properties: dict[str, Any], item_id: str = "") -> str | None:
    """``TM``, ``ETM`` or ``OLI`` from a Landsat item's ``platform``/``instruments``/id, else None.

    Band numbers mean different wavelengths on each sensor (TM B4 is NIR, OLI B4 red), so an
    item's bands can only be placed once its sensor is known.
    """
    platform = str(properties.get("platform") or "").lower().replace("_", "-")
    if platform in _LANDSAT_PLATFORMS:
        return _LANDSAT_PLATFORMS[platform]
    inst = {str(i).lower() for i in properties.get("instruments") or ()}
    if inst & {"oli", "oli-2", "oli2", "oli_tirs"}:
        return "OLI"
    if inst & {"etm", "etm+"}:
        return "ETM"
    if "tm" in inst:
        return "TM"
    return _LANDSAT_ID_PREFIX.get(item_id[:4].upper())


def band_for_wavelength(center_nm: float, tolerance_nm: float = 15.0) -> str | None:
    """The Sentinel-2 key whose centre is nearest ``center_nm`` (within ``tolerance_nm``).

    Used as a last resort when an item names a band in a way no alias table knows but declares
    its centre wavelength (``eo:center_wavelength`` is in micrometres in STAC; pass nanometres).
    """
    best = min(_S2_TABLE.items(), key=lambda kv: abs(kv[1][0] - center_nm))
    return f"s2:{best[0]}" if abs(best[1][0] - center_nm) <= tolerance_nm else None
