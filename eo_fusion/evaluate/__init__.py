"""Repeated spatial block cross-validation of models on labelled scenes (``eo-fusion evaluate``).

* :mod:`~eo_fusion.evaluate.folds`: blocks, folds and buffers (pure numpy);
* :mod:`~eo_fusion.evaluate.stats`: means and 95 % t-intervals over folds × seeds;
* :mod:`~eo_fusion.evaluate.config`: the config file (:class:`EvaluateSpec`);
* :mod:`~eo_fusion.evaluate.scenes`: the views of a scene each row trains and predicts on;
* :mod:`~eo_fusion.evaluate.rows`: the compared models (ours, Galileo, Presto, random forest,
  linear probes);
* :mod:`~eo_fusion.evaluate.run`: the loop over splits; :mod:`~eo_fusion.evaluate.report`: JSON,
  Markdown and the section of ``docs/model.md``.
"""
