"""The metric contract of METRICS.md as pure polars code: windows, inputs, engine, tiers."""
