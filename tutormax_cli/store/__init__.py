"""The database side: schema and migrations, bulk reads into polars, idempotent bulk upserts."""
