"""The class legend of map products: output classes and the nodata values of every layer.

Shared by the tile workers (class map, confidence, probabilities), the COG writer (colour table,
raster attribute table), the STAC items (classification extension) and the QA report.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Class value written where there is no prediction (outside the AOI, no valid input, failed tile).
NODATA_CLASS = 255
#: Confidence / probability value written where there is no prediction (they are stored 0–100 %).
NODATA_PERCENT = 255


@dataclass(frozen=True)
class ClassInfo:
    """One output class.

    Attributes:
        value: pixel value in the class map (0–254; 255 is nodata).
        name: class name (shown in legends, band metadata and the raster attribute table).
        color: ``#rrggbb`` colour for the colour table and quicklook.
    """

    value: int
    name: str
    color: str

    def rgb(self) -> tuple[int, int, int]:
        """The colour as an (r, g, b) tuple of 0–255 ints."""
        h = self.color.lstrip("#")
        return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)
