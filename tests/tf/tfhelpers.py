"""Paths and environment shared by the TensorFlow adapter tests."""

from __future__ import annotations

import os
import sys
from pathlib import Path

# Quiet TensorFlow and keep it off any GPU before the first import in this process.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "-1")

ROOT = Path(__file__).resolve().parents[2]
LITE_PYTHON = ROOT / ".venv-lite" / "bin" / "python"
MAIN_PYTHON = Path(sys.executable)


def tf_subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="-1", PYTHONPATH=str(ROOT))
    return env
