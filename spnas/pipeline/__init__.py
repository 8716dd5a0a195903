"""spnas.pipeline."""
