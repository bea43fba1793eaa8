"""The real parts started for the tests and the benchmarks alike: the service, nginx, replicas
under load, and training runs (bench/ and tests/ both import these; neither imports the other)."""
