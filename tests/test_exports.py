"""The public surface: what `asyncpool` exports is exactly its `__all__`."""

from __future__ import annotations

import asyncpool


def test_all_matches_public_names() -> None:
    """Every public name is in __all__ and everything in __all__ exists."""
    public = {name for name in vars(asyncpool) if not name.startswith("_")}
    assert set(asyncpool.__all__) == public
    assert isinstance(asyncpool.__all__, tuple)
    assert list(asyncpool.__all__) == sorted(asyncpool.__all__)
