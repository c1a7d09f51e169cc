"""Cloud-Optimised GeoTIFF products: classes, confidence and probabilities.

Every product is made the same safe way: GDAL's COG driver (internal tiles, deflate with the
horizontal predictor, internal overviews) writes it from the mosaic VRT into a temporary file *in
the destination folder*, ``rio_cogeo.cog_validate(strict=True)`` validates it (warnings count as
failures), and only then is it moved over the final name with ``os.replace`` — readers never see a
partial or invalid file.

The class map (uint8, nodata 255) carries its legend three ways, so any GIS tool finds it:

* a colour table (GDAL palette) with the class colours;
* band metadata: ``CLASS_NAMES`` / ``CLASS_VALUES`` / ``CLASS_COLORS`` (JSON lists);
* a GDAL raster attribute table (thematic: Value, Class name, Red, Green, Blue) and category names
  in the ``<file>.aux.xml`` sidecar, which is where GDAL keeps RATs for GeoTIFF (QGIS and
  ArcGIS read it).

Overviews of the class map use **mode** resampling (the most frequent class, never an average of
class codes); confidence and probabilities (percent, 0–100) use **average**.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from xml.sax.saxutils import escape

import rasterio
import rasterio.shutil
from rasterio.enums import ColorInterp
from rio_cogeo.cogeo import cog_validate

from eo_fusion.errors import ProductError
from eo_fusion.files import atomic_output, atomic_write_text
from eo_fusion.pipeline.legend import NODATA_CLASS, NODATA_PERCENT, ClassInfo

# GDAL RAT field types and usages (gdal.h: GDALRATFieldType / GDALRATFieldUsage).
_GFT_INTEGER, _GFT_STRING = 0, 2
_GFU_GENERIC, _GFU_NAME, _GFU_MINMAX, _GFU_RED, _GFU_GREEN, _GFU_BLUE = 0, 2, 5, 6, 7, 8


def colormap_for(classes: Sequence[ClassInfo]) -> dict[int, tuple[int, int, int, int]]:
    """GDAL colour table: class colours, nodata transparent, other entries black."""
    cmap = {v: (0, 0, 0, 255) for v in range(256)}
    for c in classes:
        cmap[c.value] = (*c.rgb(), 255)
    cmap[NODATA_CLASS] = (0, 0, 0, 0)
    return cmap


def class_band_tags(classes: Sequence[ClassInfo]) -> dict[str, str]:
    """Band metadata naming the classes (JSON lists, in class-value order)."""
    ordered = sorted(classes, key=lambda c: c.value)
    return {
        "CLASS_VALUES": json.dumps([c.value for c in ordered]),
        "CLASS_NAMES": json.dumps([c.name for c in ordered]),
        "CLASS_COLORS": json.dumps([c.color for c in ordered]),
        "NODATA_MEANING": "outside the AOI, no valid input, or failed tile",
    }


def rat_xml(classes: Sequence[ClassInfo]) -> str:
    """PAM ``.aux.xml`` with a thematic raster attribute table and category names for band 1."""
    fields = [
        ("Value", _GFT_INTEGER, _GFU_MINMAX),
        ("Class_Name", _GFT_STRING, _GFU_NAME),
        ("Red", _GFT_INTEGER, _GFU_RED),
        ("Green", _GFT_INTEGER, _GFU_GREEN),
        ("Blue", _GFT_INTEGER, _GFU_BLUE),
    ]
    lines = ["<PAMDataset>", '  <PAMRasterBand band="1">']
    # Category names are indexed by pixel value: fill the gaps below the largest class value.
    names = {c.value: c.name for c in classes}
    lines.append("    <CategoryNames>")
    for v in range(max(names) + 1):
        lines.append(f"      <Category>{escape(names.get(v, ''))}</Category>")
    lines.append("    </CategoryNames>")
    lines.append('    <GDALRasterAttributeTable tableType="thematic">')
    for i, (name, ftype, usage) in enumerate(fields):
        lines.append(
            f'      <FieldDefn index="{i}"><Name>{name}</Name><Type>{ftype}</Type>'
            f"<Usage>{usage}</Usage></FieldDefn>"
        )
    for row, c in enumerate(sorted(classes, key=lambda c: c.value)):
        r, g, b = c.rgb()
        cells = "".join(f"<F>{escape(str(v))}</F>" for v in (c.value, c.name, r, g, b))
        lines.append(f'      <Row index="{row}">{cells}</Row>')
    lines += ["    </GDALRasterAttributeTable>", "  </PAMRasterBand>", "</PAMDataset>", ""]
    return "\n".join(lines)


def read_rat(aux_xml: Path) -> list[dict[str, str]]:
    """Rows of the raster attribute table in a PAM ``.aux.xml`` (field name -> text)."""
    import xml.etree.ElementTree as ET

    root = ET.parse(aux_xml).getroot()
    rat = root.find("./PAMRasterBand/GDALRasterAttributeTable")
    if rat is None:
        return []
    names = [f.findtext("Name") or "" for f in rat.findall("FieldDefn")]
    return [
        dict(zip(names, [(f.text or "") for f in row.findall("F")], strict=True))
        for row in rat.findall("Row")
    ]


def _styled_vrt(
    src: Path,
    vrt: Path,
    kind: str,
    classes: Sequence[ClassInfo],
    band_names: Sequence[str],
    tags: dict[str, str],
) -> None:
    """A VRT of ``src`` carrying the product's metadata (GDAL copies it into the COG), so the
    source itself is never modified."""
    rasterio.shutil.copy(str(src), str(vrt), driver="VRT")
    with rasterio.open(vrt, "r+") as ds:  # a VRT opened for update saves itself on close
        ds.nodata = NODATA_CLASS if kind == "classes" else NODATA_PERCENT
        ds.update_tags(**tags)
        for i, name in enumerate(band_names, start=1):
            ds.set_band_description(i, name)
        if kind == "classes":
            ds.update_tags(1, **class_band_tags(classes))
            ds.colorinterp = [ColorInterp.palette]
            ds.write_colormap(1, colormap_for(classes))
        else:
            for i in range(1, ds.count + 1):
                ds.update_tags(i, UNITS="percent", SCALE_TO_PROBABILITY="0.01")


def _layer_style(kind: str, classes: Sequence[ClassInfo]) -> tuple[list[str], str]:
    """Band names and GDAL overview resampling of a product kind."""
    if kind == "classes":
        return ["classes"], "MODE"
    if kind == "confidence":
        return ["confidence (max probability, %)"], "AVERAGE"
    if kind == "probabilities":
        return [f"probability of {c.name} (%)" for c in classes], "AVERAGE"
    raise ProductError(f"unknown product kind {kind!r}", fix="use classes/confidence/...")


def write_cog(
    src: Path,
    dst: Path,
    *,
    kind: str,
    classes: Sequence[ClassInfo],
    blocksize: int = 256,
    tags: dict[str, str] | None = None,
    threads: int = 1,
) -> Path:
    """Convert a raster on the job grid into a validated COG at ``dst`` (atomically).

    Args:
        src: any raster GDAL reads: the mosaic VRT of the tile files
            (``mosaic.mosaic_vrt``) or a GeoTIFF; left unchanged.
        dst: final COG path.
        kind: ``classes`` (colour table, class metadata, RAT, mode overviews), ``confidence`` or
            ``probabilities`` (percent, average overviews).
        classes: the output classes.
        blocksize: internal tile edge (pixels).
        tags: extra dataset tags (provenance: job, run id, model).
        threads: GDAL compression threads.

    Returns:
        ``dst``.

    Raises:
        ProductError: the COG does not validate (the message lists rio-cogeo's findings).
    """
    dst = Path(dst)
    names, resampling = _layer_style(kind, classes)
    with atomic_output(dst, ".tmp.tif") as tmp:
        styled = Path(f"{tmp}.vrt")
        try:
            _styled_vrt(
                Path(src), styled, kind, classes, names,
                {**(tags or {}), "OVERVIEW_RESAMPLING": resampling},
            )  # fmt: skip
            # GDAL's COG driver: internal tiles, overviews down to one block, then the
            # full-resolution data, in one pass (what gdal_translate -of COG does).
            rasterio.shutil.copy(
                str(styled), str(tmp), driver="COG", COMPRESS="DEFLATE", PREDICTOR="2",
                BLOCKSIZE=str(blocksize), OVERVIEW_RESAMPLING=resampling,
                NUM_THREADS=str(max(1, threads)), BIGTIFF="IF_SAFER",
            )  # fmt: skip
        finally:
            styled.unlink(missing_ok=True)
        valid, errors, warnings = cog_validate(str(tmp), strict=True, quiet=True)
        if not valid:
            raise ProductError(
                f"{dst.name}: the written COG does not validate: {'; '.join(errors + warnings)}",
                fix="report this as a bug with the job file; the previous product is untouched",
            )
    if kind == "classes":
        atomic_write_text(Path(f"{dst}.aux.xml"), rat_xml(classes))
    return dst


def validate_cog(path: Path) -> tuple[bool, list[str]]:
    """rio-cogeo strict validation: (valid, errors + warnings)."""
    valid, errors, warnings = cog_validate(str(path), strict=True, quiet=True)
    return bool(valid), [*errors, *warnings]
