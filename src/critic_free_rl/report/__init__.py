"""After training: ``evaluate`` a model, ``compare`` algorithms x rewards x seeds, ``report`` runs."""
