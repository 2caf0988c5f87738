"""Fixtures for the Ansible tests (helpers: ansible_helpers.py)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from ansible_helpers import base_settings

# The trust lab (issue 19) is one long federation: only `make test-lab-trust` collects it, so neither
# `-m lab tests/ansible` (make test-ansible-hosts) nor `-m "not lab"` pays for it.
collect_ignore = [] if os.environ.get("EDGEFED_TRUST_LAB") == "1" else ["test_ansible_trust_lab.py"]


@pytest.fixture
def settings(tmp_path: Path) -> dict[str, Any]:
    """Valid appliance settings with the PKI in a temporary directory."""
    return base_settings(tmp_path)
