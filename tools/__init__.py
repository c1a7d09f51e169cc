"""Maintainer scripts, run from the repository root by ``make`` and never installed.

* ``python -m tools.docs_gen`` (``make docs``): regenerate docs/configuration.md and docs/cli.md.
* ``python -m tools.bundle_model`` (``make model``): retrain the bundled model, write docs/model.md.
* ``python -m tools.sample_catalog`` (``make sample-catalog``): rebuild catalogs/sample/stac.

They read and write the repository (docs/, pipelines/, catalogs/, eo_fusion/data/model/), which
is why they are not part of the ``eo_fusion`` package a wheel installs.
"""
