"""A worker process whose upload fails half-way, on cue: it joins, sends the first half of its
round's update, prints "sent-half" and waits for SIGUSR1; then, by MODE:
  disconnect - closes the connection (the rest never comes);
  nan        - sends the rest, whose last quarter of the last tensor is NaN (so the first half of the
               frame was clean), prints the code of the REJECT it gets back and leaves.

Usage: half_then_fail.py PKI_DIR NAME PORT MODE
"""

from __future__ import annotations

import signal
import sys

import numpy as np

from edgefed.pki import NodeCredentials
from edgefed.transport import client_context, connect_tls
from edgefed.wire import MessageType, encode_control_frame, encode_tensor_frame


def main() -> None:
    pki_dir, name, port, mode = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})  # held until sigwait: the cue cannot be lost
    conn = connect_tls("127.0.0.1", port, client_context(NodeCredentials.load(pki_dir, name)))
    conn.send([encode_control_frame(MessageType.HELLO, 0, {"num_samples": 100})])
    while (frame := conn.recv()).type is not MessageType.WEIGHTS:
        pass
    assert frame.tensors is not None
    update = [np.array(t) for t in frame.tensors]
    if mode == "nan":
        tail = update[-1].reshape(-1)
        tail[-tail.size // 4 :] = np.nan
    data = b"".join(bytes(p) for p in encode_tensor_frame(MessageType.UPDATE, frame.round, update, 100))
    conn.send([data[: len(data) // 2]])
    print("sent-half", flush=True)
    signal.sigwait({signal.SIGUSR1})
    if mode == "disconnect":
        conn.close()
        print("closed", flush=True)
        return
    conn.send([data[len(data) // 2 :]])
    while (reply := conn.recv()).type is not MessageType.REJECT:
        pass
    print(reply.body.get("code"), flush=True)
    conn.close()


if __name__ == "__main__":
    main()
