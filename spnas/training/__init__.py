"""spnas.training."""
