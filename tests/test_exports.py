"""The public surface: what `asyncpool` exports is exactly its `__all__`."""

from __future__ import annotations

import types

import asyncpool


def test_all_matches_public_names() -> None:
    """Every public name is in __all__ and everything in __all__ exists."""
    # Submodules (asyncpool.fastapi, asyncpool.aiohttp) become attributes once
    # imported; they are public modules, not names of __all__.
    public = {
        name
        for name, value in vars(asyncpool).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert set(asyncpool.__all__) == public
    assert isinstance(asyncpool.__all__, tuple)
    assert list(asyncpool.__all__) == sorted(asyncpool.__all__)
