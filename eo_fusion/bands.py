"""The band registry: the single source of truth for what a band *is*.

Every asset of every supported collection is mapped onto a :class:`BandSpec` with a registry key
(``"<family>:<name>"``, e.g. ``s2:B04``, ``s1:VV``, ``aerial:nir``, ``elevation:dsm``). The
spectrum-aware model consumes these keys (and their wavelengths), never positional band indices.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

BandKind = Literal["reflectance", "sar", "elevation", "categorical", "osm", "index", "aerial"]


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
