"""Fixtures for the Ansible tests (helpers: ansible_helpers.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from ansible_helpers import base_settings


@pytest.fixture
def settings(tmp_path: Path) -> dict[str, Any]:
    """Valid appliance settings with the PKI in a temporary directory."""
    return base_settings(tmp_path)
