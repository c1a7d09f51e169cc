"""Co-registration: resampling rules by band kind, shift estimation and correction, QA metrics."""
