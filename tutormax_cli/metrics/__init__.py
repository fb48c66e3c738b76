"""The metric contract of docs/metrics.md as pure polars code: windows, inputs, engine, tiers."""
