"""Library stages of a pipeline: extract, validate, features, train, compare, registry.

``steps`` ties each of them to (config, store, day)."""
