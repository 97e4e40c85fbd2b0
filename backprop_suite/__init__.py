"""Machinery of the suite: data with provenance, experiment specs, training, artifacts."""
