"""Helpers that tests (and users' own tests) import, and nothing the library itself runs.

The byte-range file server that ``eo-fusion catalog serve`` uses lives in the package proper:
:mod:`eo_fusion.catalogs.fileserver` (tests import it from there too).
"""
