"""Per-modality readers: each turns normalised items into arrays on a tile grid.

One module per modality (``s2``, ``s1``, ``aerial``, ``elevation``, ``osm``, ``raster`` for generic
single-layer rasters such as labels), all reading pixels through :mod:`eo_fusion.sources.reader`.
"""
