"""One federated Keras participant for the tests: `python keras_node.py CONFIG OUT_DIR [EXPORT_DIR]`.

Joins as the configuration's role through FederatedCallback, trains on its shard of digits with
model.fit until the chief ends the federation, then writes OUT_DIR/weights.npz and OUT_DIR/result.json.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import asdict
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "-1")

import keras
import numpy as np

from edgefed.config import load_config
from edgefed.tf.callback import FederatedCallback
from edgefed.tf.trainer import build_classifier
from edgefed.trainers.data import load_dataset


def main(config_path: str, out_dir: str, export_dir: str | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    config = load_config(config_path)
    keras.utils.set_random_seed(config.trainer.seed)
    data = load_dataset("digits", seed=config.trainer.seed)
    model = build_classifier(data.input_shape, len(data.labels), data.max_value, config.trainer.learning_rate,
                             seed=config.trainer.seed + (0 if config.node.role == "chief" else 100))
    callback = FederatedCallback(config, export_dir=export_dir, labels=data.labels,
                                 test_data=(data.x_test, data.y_test))
    with callback:
        start = callback.join(model)
        x, y = data.shard(start.task_index, start.total)
        callback.num_samples = len(x)
        model.fit(x, y, batch_size=config.trainer.batch_size, epochs=10_000, callbacks=[callback], verbose=0)
    _, accuracy = model.evaluate(data.x_test, data.y_test, verbose=0)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    np.savez(out / "weights.npz", *model.get_weights())
    (out / "result.json").write_text(json.dumps({
        "task_index": start.task_index, "total": start.total, "shard": len(x), "steps": callback.steps,
        "round": callback.round, "finished": callback.finished, "accuracy": float(accuracy),
        "history": [asdict(record) for record in callback.history],
        "exported": None if callback.exported is None else str(callback.exported.manifest_path),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
