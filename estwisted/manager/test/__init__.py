"""
Unit tests for L{estwisted.manager}; run with C{trial estwisted.manager}.
"""

import estwisted.test  # noqa: F401  (registers the deterministic hypothesis profile)
