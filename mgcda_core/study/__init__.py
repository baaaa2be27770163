"""Small-scale reproduction of MGCDA's Table 3 ablation (docs/RESULTS.md): ``python -m mgcda_core.study``.

Modules: ``config`` (study settings, Table 3 rows), ``data`` (procedural data, prepare, target split),
``runner`` (one row × seed: train, evaluate, done marker), ``training_curves`` (TensorBoard scalars → PNG,
adversarial summary), ``report`` (mean ± std over seeds → results.md / results.json).
"""
