"""Reference documents generated from their sources: CRD schema, chart values, metrics."""
