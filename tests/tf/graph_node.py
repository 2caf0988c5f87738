"""One graph-mode participant for the tests, written the way the seed's users wrote theirs:
tf.compat.v1 graph, MonitoredSession, and FederatedHook built from the seed's parameters.

    python graph_node.py chief|worker NAME PORT PKI_DIR STATE_DIR OUT_DIR
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

import numpy as np
import tensorflow as tf

from edgefed.tf.hook import FederatedHook
from edgefed.trainers.data import load_dataset

INTERVAL_STEPS = 5
ROUNDS = 3
BATCH = 32


def main(role: str, name: str, port: str, pki_dir: str, state_dir: str, out_dir: str) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    tf.compat.v1.disable_eager_execution()
    data = load_dataset("digits")

    pixels = tf.compat.v1.placeholder(tf.float32, [None, 64], name="pixels")
    labels = tf.compat.v1.placeholder(tf.int64, [None], name="labels")
    seed = 0 if role == "chief" else 7  # different initial weights: the chief's must win at the start
    kernel = tf.compat.v1.get_variable("kernel", [64, 10], initializer=tf.compat.v1.glorot_uniform_initializer(seed))
    bias = tf.compat.v1.get_variable("bias", [10], initializer=tf.compat.v1.zeros_initializer())
    logits = tf.matmul(pixels / 16.0, kernel) + bias
    loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
    global_step = tf.compat.v1.train.get_or_create_global_step()
    train_op = tf.compat.v1.train.GradientDescentOptimizer(0.5).minimize(loss, global_step=global_step)
    initial = {}

    hook = FederatedHook(
        is_chief=role == "chief", name=name,
        private_ip=f"127.0.0.1:{port}", public_ip=f"127.0.0.1:{port}",
        private_key=pki_dir, list_of_workers=["worker1"], domain="edgefed", ip=None,
        wait_time=60, interval_steps=INTERVAL_STEPS, state_dir=state_dir, rounds=ROUNDS,
    )
    steps = 0
    with tf.compat.v1.train.MonitoredSession(hooks=[hook]) as session:
        # The hook joined in after_create_session: pick this node's shard by its task index.
        x, y = data.shard(hook.task_index, hook.total)
        initial["kernel"] = session.run(kernel)  # the chief's broadcast weights; not a training step
        rng = np.random.default_rng(hook.task_index)
        while not session.should_stop():
            batch = rng.choice(len(x), BATCH, replace=False)
            session.run(train_op, feed_dict={pixels: x[batch], labels: y[batch]})
            steps += 1
    assert hook.final_weights is not None
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    np.savez(out / "weights.npz", *hook.final_weights)
    np.save(out / "initial_kernel.npy", initial["kernel"])
    (out / "result.json").write_text(json.dumps({
        "task_index": hook.task_index, "total": hook.total, "steps": steps, "round": hook.round,
        "finished": hook.finished, "executing_eagerly": tf.executing_eagerly(),
        "history": [asdict(record) for record in hook.history],
        "config": {
            "role": hook.config.node.role, "pki_dir": hook.config.node.pki_dir,
            "private_port": hook.config.federation.private_port,
            "min_workers": hook.config.federation.min_workers,
            "ledger_backend": hook.config.ledger.backend, "ledger_domain": hook.config.ledger.domain,
        },
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
