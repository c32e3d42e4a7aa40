"""Shared test setup: import path for ``tusou_export`` and repository paths."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

EXPORT_DIR = Path(__file__).resolve().parents[1]
REPO_ROOT = EXPORT_DIR.parents[1]
sys.path.insert(0, str(EXPORT_DIR))


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The git repository root."""
    return REPO_ROOT


@pytest.fixture(scope="session")
def tiny_dir() -> Path:
    """model_repository/tiny (committed tiny models)."""
    return REPO_ROOT / "model_repository" / "tiny"
