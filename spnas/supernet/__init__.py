"""spnas.supernet."""
