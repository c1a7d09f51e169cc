"""Training: datasets over ModalityStacks, pretraining and fine-tuning loops, metrics, benchmark
dataset adapters, and the bundled-model build (``python -m eo_fusion.train.bundle``)."""
