"""Fixtures of the ZeRO-1 resharding suite (README.md)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "compat"))

from lab import Lab  # noqa: E402


@pytest.fixture(scope="session")
def lab(request, tmp_path_factory) -> Lab:
    """The session's runs and tags, made for the selected tests only."""
    return Lab(tmp_path_factory.mktemp("zero1"), request.session.items)
