"""Training: datasets over ModalityStacks, pretraining and fine-tuning loops, metrics, benchmark
dataset adapters and figures. The bundled model is built by ``tools/bundle_model.py``
(``make model``), outside the package.

Training jobs (``eo-fusion train``, docs/training.md): ``job`` (spec) -> ``labels`` (label files,
mapping tables) -> ``sampling`` (blocks, split, chips; pure) -> ``plan`` / ``scenes`` (what to
build) -> ``chips`` (the Zarr chip store and its manifest) -> ``datasets`` (torch, Lightning,
TorchGeo) -> ``tasks`` + ``loop`` (device, precision, DDP, resume) -> ``runner`` + ``report``."""
