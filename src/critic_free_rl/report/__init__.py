"""Comparison reports of finished runs: read their event files, group seeds by configuration,
tables, curves and a TensorBoard view (``critic-free-rl report`` / ``compare``)."""
