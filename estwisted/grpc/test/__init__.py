import estwisted.test  # noqa: F401  (registers the deterministic hypothesis profile)
