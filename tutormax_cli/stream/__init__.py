"""Redis Streams: entry formats, the metrics worker, and inspection of groups and dead letters."""
