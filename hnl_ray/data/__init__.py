"""The data layer: readers into one canonical schema, filters, splits, contiguous ids, prepared Parquet."""
