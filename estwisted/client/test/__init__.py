"""
Unit tests for L{estwisted.client}; run with C{trial estwisted.client}.
"""

from hypothesis import HealthCheck, settings

settings.register_profile(
    "estwisted",
    deadline=None,
    derandomize=True,
    max_examples=100,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("estwisted")
