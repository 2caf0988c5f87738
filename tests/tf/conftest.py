"""Fixtures for the TensorFlow adapter tests: a trained, exported digits model shared by the session."""

from __future__ import annotations

from pathlib import Path

import pytest
from tfhelpers import LITE_PYTHON


@pytest.fixture(scope="session")
def lite_python() -> Path:
    """The Pi inference environment (NumPy < 2 + tflite-runtime + edgefed --no-deps) built by `make setup`."""
    if not LITE_PYTHON.exists():
        pytest.fail(f"{LITE_PYTHON} is missing: run `make setup` (mk/lite.mk builds .venv-lite)")
    return LITE_PYTHON


@pytest.fixture(scope="session")
def exported(tmp_path_factory: pytest.TempPathFactory):  # -> tuple[KerasClassifierTrainer, ExportedModel]
    """A digits classifier trained for a few hundred steps and exported with its test split as .npy."""
    # TensorFlow is imported here, not at collection, so the fast tests in this folder never load it.
    import numpy as np

    from edgefed.tf.export import export_model
    from edgefed.tf.trainer import KerasClassifierTrainer

    trainer = KerasClassifierTrainer(learning_rate=0.5, seed=3)
    trainer.train_steps(300)
    directory = tmp_path_factory.mktemp("export")
    result = export_model(
        trainer.model, directory, round_number=7, labels=trainer.dataset.labels,
        test_data=(trainer.dataset.x_test, trainer.dataset.y_test),
    )
    np.save(directory / "x_test.npy", trainer.dataset.x_test)
    return trainer, result
