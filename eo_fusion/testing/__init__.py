"""Helpers that tests (and users' own tests) import, and nothing the library itself runs.

* :mod:`eo_fusion.testing.faults` — a loopback HTTP server that misbehaves on demand (fault suite).
* :mod:`eo_fusion.testing.synthetic` — ``SyntheticPredictor``, a coordinate-based tile predictor
  (no imagery) for exercising execution, resume and mosaicking on any grid.

The byte-range file server that ``eo-fusion catalog serve`` uses lives in the package proper:
:mod:`eo_fusion.catalogs.fileserver` (tests import it from there too).
"""
