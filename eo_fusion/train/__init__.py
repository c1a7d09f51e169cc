"""Training: datasets over ModalityStacks, pretraining and fine-tuning loops, metrics, benchmark
dataset adapters and figures. The bundled model is built by ``tools/bundle_model.py``
(``make model``), outside the package."""
