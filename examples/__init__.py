"""Runnable examples; the tests import and run them."""
