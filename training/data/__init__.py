"""Reading data: the sources (MovieLens-100K, a user's CSV/Parquet log, the synthetic
generator), their validation, vocabularies, item content, the split, training samples, and the
out-of-core prepared folder with its shards."""
