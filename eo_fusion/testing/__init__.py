"""Helpers that tests (and users' own tests) import: real local servers and fixtures.

* :mod:`eo_fusion.testing.servers` — a byte-range HTTP file server for GDAL ``/vsicurl/`` reads.
* :mod:`eo_fusion.testing.synthetic` — ``SyntheticPredictor``, a coordinate-based tile predictor
  (no imagery) for exercising execution, resume and mosaicking on any grid.
"""
