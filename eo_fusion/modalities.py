"""The modality registry: one :class:`ModalityDef` per modality family, used everywhere.

A *modality* is what a job names under ``modalities:`` (``s2-l2a``, ``s1-grd``, ``dem``, ...) and
what a normalised item says it is (:attr:`eo_fusion.catalogs.items.NormalizedItem.modality`). A
*family* groups the modalities that share a reader and options (``s2``: ``s2-l2a`` and
``s2-l1c``). Each definition says, in one place:

* which modality names belong to it and which STAC collection ids mean them (normalisation),
* which band-registry family its bands come from and which provider alias tables place them,
* which reader loads it (imported lazily: the registry itself needs only pydantic),
* its co-registration role (``optical`` reference, ``sar``, or ``none``: not checked),
* which of the common modality keys apply (``mode``, ``aggregate``, ``max_cloud``),
* a pydantic model of its ``options`` (``extra="forbid"``: an unknown key is an error). The
  defaults live in these models and nowhere else; the readers read the typed attributes.

Adding a family (Landsat, say) is one more :class:`ModalityDef` in :data:`REGISTRY` plus its reader.
The job-time checks that use these definitions are in :mod:`eo_fusion.config`.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from eo_fusion.bands import (
    AERIAL_ALIASES,
    ELEVATION_ALIASES,
    LABEL_ALIASES,
    LANDSAT_ALIASES,
    S2_ALIASES,
    SAR_ALIASES,
    landsat_sensor,
)
from eo_fusion.errors import ConfigError

if TYPE_CHECKING:
    from eo_fusion.stack import Loader

__all__ = [
    "REGISTRY",
    "AerialOptions",
    "CoregRole",
    "ElevationOptions",
    "LandsatOptions",
    "ModalityDef",
    "ModalityOptions",
    "NoOptions",
    "OSMOptions",
    "S1Options",
    "S2Options",
    "coreg_role",
    "find_modality",
    "get_modality",
    "modality_names",
    "search_properties",
]

#: How co-registration treats a modality: the reference candidates, SAR (measured with the SAR
#: method), or not checked at all.
CoregRole = Literal["optical", "sar", "none"]
CoregMode = Literal["auto", "check", "off"]

#: Key in a field's ``json_schema_extra`` that restricts an option to some modality names.
ONLY = "eo_fusion:only"


# --------------------------------------------------------------------------------------------
# Options models (``modalities.<name>.options``). docs/configuration.md is generated from them.
# --------------------------------------------------------------------------------------------


class ModalityOptions(BaseModel):
    """Base of every family's ``options`` model: unknown keys are errors, instances immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @classmethod
    def of(cls, value: ModalityOptions | Mapping[str, Any]) -> Self:
        """``value`` as this model: typed options pass through, a plain mapping is validated.

        Readers call this so that a :class:`~eo_fusion.config.ModalitySpec` built in code with a
        plain ``options`` dict is checked as strictly as one from a job file.

        Raises:
            ConfigError: an unknown or invalid option (named, with the valid ones), or options
                typed for another family.
        """
        if isinstance(value, cls):
            return value
        if isinstance(value, ModalityOptions):
            raise ConfigError(
                f"options of type {type(value).__name__} given to a {cls.__name__} reader",
                fix="build the modality with eo_fusion.config.modality_spec(name, ...)",
            )
        try:
            return cls.model_validate(dict(value))
        except ValidationError as e:
            from eo_fusion.config import format_validation_error

            raise ConfigError(
                format_validation_error(e, cls, "options"),
                fix="see docs/configuration.md (Modality options)",
            ) from e

    @classmethod
    def applicable(cls, name: str) -> list[str]:
        """The option keys that apply to modality ``name`` (sorted)."""
        return sorted(k for k in cls.model_fields if name in cls.only_for(k, (name,)))

    @classmethod
    def only_for(cls, key: str, default: tuple[str, ...] = ()) -> tuple[str, ...]:
        """The modality names option ``key`` is restricted to, else ``default``."""
        extra = cls.model_fields[key].json_schema_extra
        names = extra.get(ONLY) if isinstance(extra, dict) else None
        return tuple(names) if isinstance(names, list) else default  # type: ignore[arg-type]


def _only(*names: str) -> dict[str, Any]:
    return {ONLY: list(names)}


class NoOptions(ModalityOptions):
    """No modality-specific options (labels, indices such as NDVI)."""


class _CoregOptions(ModalityOptions):
    coreg: CoregMode = Field(
        "auto",
        description="co-registration: `auto` (estimate, correct if significant and confident), "
        "`check` (estimate only) or `off`",
    )


class S2Options(_CoregOptions):
    """Sentinel-2 masks and date selection (docs/stacks.md, Sentinel-2)."""

    cloud_threshold: float = Field(
        0.4,
        ge=0,
        le=1,
        description="s2cloudless: a pixel is cloud where its averaged cloud probability "
        "(0-1) exceeds this (the package's default, 0.4)",
        json_schema_extra=_only("s2-l1c"),
    )
    cloud_resolution: float = Field(
        160.0,
        gt=0,
        description="s2cloudless runs on the ten bands averaged to pixels of this size (metres; "
        "on a lon/lat grid 1 degree = 111,320 m), anchored on whole multiples in the grid's "
        "CRS. 160 m is what its authors run in production (Sentinel Hub, 'Cloud masks at your "
        "service', 2020; the CLP/CLM bands of docs.sentinel-hub.com)",
        json_schema_extra=_only("s2-l1c"),
    )
    cloud_average_over: int = Field(
        4,
        ge=0,
        description="s2cloudless: radius of the disk the probability is averaged over before "
        "thresholding, in cloud_resolution pixels (0: none; 4 as its authors use at 160 m)",
        json_schema_extra=_only("s2-l1c"),
    )
    cloud_dilation: int = Field(
        2,
        ge=0,
        description="s2cloudless: radius of the disk the cloud mask is dilated with, in "
        "cloud_resolution pixels (0: none; 2 as its authors use at 160 m)",
        json_schema_extra=_only("s2-l1c"),
    )
    shadow_search_px: int = Field(
        30,
        ge=0,
        description="cloud shadows are looked for this many pixels around clouds (0: none)",
        json_schema_extra=_only("s2-l1c"),
    )
    shadow_nir_max: float = Field(
        0.15,
        description="shadow: NIR (B08) reflectance below this",
        json_schema_extra=_only("s2-l1c"),
    )
    shadow_swir_max: float = Field(
        0.10,
        description="shadow: SWIR (B11) reflectance below this",
        json_schema_extra=_only("s2-l1c"),
    )
    mask_snow: bool = Field(
        False, description="also mask SCL class 11 (snow)", json_schema_extra=_only("s2-l2a")
    )
    min_valid_fraction: float = Field(
        0.0, ge=0, le=1, description="drop dates with a smaller clear fraction of the tile"
    )


class S1Options(_CoregOptions):
    """Sentinel-1 backscatter (docs/stacks.md, Sentinel-1); values combine in linear power."""

    units: Literal["dB", "linear"] = Field("dB", description="output units")
    speckle: Literal["none", "lee"] = Field("none", description="speckle filter")
    speckle_window: int = Field(5, ge=3, description="speckle filter window edge (odd pixels)")
    orbit: Literal["any", "ascending", "descending"] = Field(
        "any",
        description="keep only acquisitions of this orbit direction (sent to the catalog as "
        "a `sat:orbit_state` filter)",
    )
    relative_orbit: int | None = Field(
        None,
        ge=1,
        le=175,
        description="keep only this relative orbit (track; `sat:relative_orbit` filter)",
    )
    calibration: Literal["annotation", "none"] = Field(
        "annotation",
        description="GRD amplitude DN: `annotation` calibrates to sigma0 = DN^2 / A^2 with the "
        "product's calibration annotation (refused when it cannot be read); `none` keeps "
        "uncalibrated power DN^2 (relative values only)",
        json_schema_extra=_only("s1-grd"),
    )

    @field_validator("speckle_window")
    @classmethod
    def _odd(cls, value: int) -> int:
        if value % 2 == 0:
            raise ValueError(f"speckle_window {value} is even; use an odd size")
        return value


#: QA_PIXEL flags a Landsat mask can use (bit numbers in :mod:`eo_fusion.sources.landsat`).
LandsatFlag = Literal["dilated_cloud", "cirrus", "cloud", "cloud_shadow", "snow", "water"]
_LANDSAT_DEFAULT_MASK: tuple[LandsatFlag, ...] = (
    "dilated_cloud",
    "cirrus",
    "cloud",
    "cloud_shadow",
)


class LandsatOptions(_CoregOptions):
    """Landsat Collection 2 Level-2 masks and date selection (docs/stacks.md, Landsat)."""

    mask: list[LandsatFlag] = Field(
        default_factory=lambda: list(_LANDSAT_DEFAULT_MASK),
        description="QA_PIXEL flags whose pixels are masked (fill is always masked); default "
        "`[dilated_cloud, cirrus, cloud, cloud_shadow]`, `[]` masks fill only",
    )
    min_valid_fraction: float = Field(
        0.0, ge=0, le=1, description="drop dates with a smaller clear fraction of the tile"
    )


class AerialOptions(_CoregOptions):
    """Aerial imagery: only the co-registration mode."""


class ElevationOptions(ModalityOptions):
    """Elevation rasters and point clouds (docs/stacks.md, Elevation)."""

    fill_distance_px: float = Field(
        100.0, gt=0, description="DTM holes are filled from ground within this distance (pixels)"
    )
    crs: str | None = Field(
        None, description="CRS of point clouds whose header declares none (EPSG code or WKT)"
    )


class RoadWidths(ModalityOptions):
    """Widths (metres) that OSM lines are buffered to before rasterising."""

    roads_major: float = Field(default=12.0, gt=0, description="motorway … secondary")
    roads_minor: float = Field(default=6.0, gt=0, description="tertiary … track")
    waterway: float = Field(default=5.0, gt=0, description="waterway lines")


class OSMOptions(ModalityOptions):
    """OpenStreetMap rasterisation (docs/stacks.md, OpenStreetMap)."""

    supersample: int = Field(
        4, ge=1, description="rasterise this many times finer, then average (cover fractions)"
    )
    widths: RoadWidths = Field(
        default_factory=lambda: RoadWidths(), description="line buffer widths (m)"
    )


# --------------------------------------------------------------------------------------------
# Definitions
# --------------------------------------------------------------------------------------------

#: Alias tables for modalities without provider tables of their own (tried in this order).
_GENERIC_ALIASES: tuple[Mapping[str, str], ...] = (S2_ALIASES, SAR_ALIASES, ELEVATION_ALIASES)
_MODES_ALL = ("composite", "timeseries")


@dataclass(frozen=True)
class ModalityDef:
    """One modality family (see module doc).

    Attributes:
        family: family id (``s2``, ``s1``, ``elevation``, ...).
        names: the modality names of the family, as jobs and items spell them.
        description: one line for docs and errors.
        loader: ``"module:function"`` of the reader, a :data:`eo_fusion.stack.Loader`.
        coreg_role: co-registration role (:data:`CoregRole`).
        options: the pydantic model of ``modalities.<name>.options``.
        band_family: band-registry family its bands come from (``s2`` -> ``s2:B04``).
        aliases: provider alias tables that place asset/band names on registry keys.
        place_by_wavelength: unplaced bands may be placed by their centre wavelength.
        single_band_keys: modality name -> key of an unnamed single-band asset (``dem``).
        collections: (STAC collection id prefix, modality name) pairs that identify items.
        sensor_of: item (properties, id) -> sensor name, for families whose band names mean
            different bands on different sensors (Landsat TM/ETM+/OLI).
        sensor_aliases: sensor name -> alias table, tried before ``aliases``.
        modes: the ``mode`` values its reader implements.
        aggregates: its reader implements ``aggregate`` (time series only).
        cloud_cover: its items carry ``eo:cloud_cover`` (so ``max_cloud`` can apply; items
            without it never pass a ``max_cloud`` filter).
    """

    family: str
    names: tuple[str, ...]
    description: str
    loader: str
    coreg_role: CoregRole
    options: type[ModalityOptions]
    band_family: str
    aliases: tuple[Mapping[str, str], ...] = _GENERIC_ALIASES
    place_by_wavelength: bool = False
    single_band_keys: Mapping[str, str] = field(default_factory=dict)
    collections: tuple[tuple[str, str], ...] = ()
    sensor_of: Callable[[dict[str, Any], str], str | None] | None = None
    sensor_aliases: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    modes: tuple[str, ...] = _MODES_ALL
    aggregates: bool = False
    cloud_cover: bool = False

    def aliases_for(
        self, properties: dict[str, Any], item_id: str
    ) -> tuple[Mapping[str, str], ...]:
        """Alias tables for one item: its sensor's table first (when the family has sensors)."""
        sensor = self.sensor_of(properties, item_id) if self.sensor_of else None
        table = self.sensor_aliases.get(sensor) if sensor else None
        return (table, *self.aliases) if table else self.aliases

    def load_function(self) -> Loader:
        """The reader, imported on first use (readers pull in scipy, geopandas, ...)."""
        module, _, attr = self.loader.partition(":")
        fn: Loader = getattr(importlib.import_module(module), attr)
        return fn


REGISTRY: tuple[ModalityDef, ...] = (
    ModalityDef(
        family="s2",
        names=("s2-l2a", "s2-l1c"),
        description="Sentinel-2 MSI reflectance (L2A surface, L1C top of atmosphere)",
        loader="eo_fusion.sources.s2:load_s2",
        coreg_role="optical",
        options=S2Options,
        band_family="s2",
        aliases=(S2_ALIASES,),
        place_by_wavelength=True,
        # Preferred collection first (a catalog given by URL gets the first that it lists):
        # Earth Search's Collection 1 reprocessing before its older, mixed-baseline collection.
        collections=(
            ("sentinel-2-c1-l2a", "s2-l2a"),
            ("sentinel-2-l2a", "s2-l2a"),
            ("sentinel-2-c1-l1c", "s2-l1c"),
            ("sentinel-2-l1c", "s2-l1c"),
            ("sentinel-2-pre-c1-l2a", "s2-l2a"),  # Earth Search v1: L2A before Collection 1
        ),
        aggregates=True,
        cloud_cover=True,
    ),
    ModalityDef(
        family="landsat",
        names=("landsat-c2-l2",),
        description="Landsat 4-9 Collection 2 Level-2 surface reflectance and temperature",
        loader="eo_fusion.sources.landsat:load_landsat",
        coreg_role="optical",
        options=LandsatOptions,
        band_family="landsat",
        aliases=(),
        collections=(("landsat-c2-l2", "landsat-c2-l2"), ("landsat-c2l2", "landsat-c2-l2")),
        sensor_of=landsat_sensor,
        sensor_aliases=LANDSAT_ALIASES,
        aggregates=True,
        cloud_cover=True,
    ),
    ModalityDef(
        family="s1",
        names=("s1-grd", "s1-rtc"),
        description="Sentinel-1 C-band backscatter (GRD, or radiometrically terrain-corrected)",
        loader="eo_fusion.sources.s1:load_s1",
        coreg_role="sar",
        options=S1Options,
        band_family="s1",
        aliases=(SAR_ALIASES,),
        collections=(("sentinel-1-grd", "s1-grd"), ("sentinel-1-rtc", "s1-rtc")),
        aggregates=True,
    ),
    ModalityDef(
        family="elevation",
        names=("dem", "dsm", "dtm", "lidar"),
        description="Elevation (metres): terrain/surface models or a lidar point cloud",
        loader="eo_fusion.sources.elevation:load_elevation",
        coreg_role="none",
        options=ElevationOptions,
        band_family="elevation",
        aliases=(ELEVATION_ALIASES,),
        single_band_keys={"dem": "elevation:dem", "dsm": "elevation:dsm", "dtm": "elevation:dtm"},
        collections=(
            ("cop-dem", "dem"),
            ("nasadem", "dem"),
            ("alos-dem", "dem"),
            ("3dep-seamless", "dem"),
        ),
        modes=("composite",),  # one surface: the reader mosaics, it keeps no dates
    ),
    ModalityDef(
        family="aerial",
        names=("aerial",),
        description="Aerial RGB/RGBN imagery (0-1 brightness)",
        loader="eo_fusion.sources.aerial:load_aerial",
        coreg_role="optical",
        options=AerialOptions,
        band_family="aerial",
        aliases=(AERIAL_ALIASES,),
        collections=(("naip", "aerial"),),
    ),
    ModalityDef(
        family="osm",
        names=("osm",),
        description="OpenStreetMap features as cover fractions",
        loader="eo_fusion.sources.osm:load_osm",
        coreg_role="none",
        options=OSMOptions,
        band_family="osm",
        modes=("composite",),
    ),
    ModalityDef(
        family="labels",
        names=("labels",),
        description="Categorical reference layers (land cover)",
        loader="eo_fusion.sources.raster:load_raster",
        coreg_role="none",
        options=NoOptions,
        band_family="label",
        aliases=(LABEL_ALIASES,),
        collections=(("esa-worldcover", "labels"), ("io-lulc", "labels")),
    ),
    ModalityDef(
        family="index",
        names=("ndvi",),
        description="Spectral indices delivered as rasters (NDVI)",
        loader="eo_fusion.sources.raster:load_raster",
        coreg_role="none",
        options=NoOptions,
        band_family="index",
    ),
)

_BY_NAME: dict[str, ModalityDef] = {n: d for d in REGISTRY for n in d.names}


def modality_names() -> tuple[str, ...]:
    """Every modality name, in registry order."""
    return tuple(_BY_NAME)


def find_modality(name: str) -> ModalityDef | None:
    """The definition of modality ``name``, or ``None`` when the registry does not know it."""
    return _BY_NAME.get(name)


def get_modality(name: str) -> ModalityDef:
    """The definition of modality ``name``.

    Raises:
        ConfigError: unknown name; the message suggests the closest and lists the known ones.
    """
    found = _BY_NAME.get(name)
    if found is None:
        close = difflib.get_close_matches(name, list(_BY_NAME), n=1)
        guess = f" (did you mean '{close[0]}'?)" if close else ""
        raise ConfigError(
            f"unknown modality '{name}'{guess}",
            fix=f"use one of {', '.join(_BY_NAME)}",
        )
    return found


def coreg_role(name: str) -> CoregRole:
    """Co-registration role of modality ``name`` (``none`` for names the registry lacks)."""
    found = _BY_NAME.get(name)
    return found.coreg_role if found else "none"


def search_properties(name: str, options: ModalityOptions | Mapping[str, Any]) -> dict[str, Any]:
    """STAC property filters implied by a modality's options (sent to the catalog's search).

    Sentinel-1 ``orbit`` -> ``sat:orbit_state``, ``relative_orbit`` -> ``sat:relative_orbit``
    (STAC ``sat`` extension); other families have none.
    """
    mdef = find_modality(name)
    if mdef is None or mdef.family != "s1":
        return {}
    opts = S1Options.of(options)
    out: dict[str, Any] = {}
    if opts.orbit != "any":
        out["sat:orbit_state"] = opts.orbit
    if opts.relative_orbit is not None:
        out["sat:relative_orbit"] = opts.relative_orbit
    return out


def option_owners(key: str) -> list[str]:
    """The modality names that have option ``key`` (for "does not apply" messages)."""
    return [n for d in REGISTRY for n in d.names if key in d.options.applicable(n)]
