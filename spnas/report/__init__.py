"""spnas.report."""
