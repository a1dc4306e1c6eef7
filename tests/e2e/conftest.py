"""Fixtures shared by the e2e tests: each test's own databases and the stacks it started.

They live in test_stack.py (which keeps using them as before); re-exported here so the other e2e
modules get them without importing a test module's fixtures by hand.
"""

from __future__ import annotations

from tests.e2e.test_stack import db_prefix, stacks

__all__ = ["db_prefix", "stacks"]
