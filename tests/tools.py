"""External tools a test needs: under CI=true a missing tool fails the test, never skips."""

from __future__ import annotations

import os
import shutil

import pytest


def require_tool(name: str) -> str:
    """Path of the executable `name`; fails under CI=true when it is missing, skips elsewhere."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (the README set-up installs it)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


def require_module(name: str) -> None:
    """Importable Python module `name`; fails under CI=true when missing, skips elsewhere."""
    import importlib.util
    if importlib.util.find_spec(name) is None:
        message = f"the Python package {name} is not installed (pip install -e '.[dev]')"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
