"""A worker process that joins, sends only the first half of an update and waits to be killed.

Usage: partial_upload.py PKI_DIR NAME PORT
"""

from __future__ import annotations

import sys
import time

from edgefed.pki import NodeCredentials
from edgefed.transport import client_context, connect_tls
from edgefed.wire import MessageType, encode_control_frame, encode_tensor_frame


def main() -> None:
    pki_dir, name, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    conn = connect_tls("127.0.0.1", port, client_context(NodeCredentials.load(pki_dir, name)))
    conn.send([encode_control_frame(MessageType.HELLO, 0, {"num_samples": 100})])
    while (frame := conn.recv()).type is not MessageType.WEIGHTS:
        pass
    assert frame.tensors is not None
    print("joined", flush=True)
    data = b"".join(bytes(p) for p in encode_tensor_frame(MessageType.UPDATE, frame.round, frame.tensors, 100))
    conn.send([data[: len(data) // 2]])
    print("sent-half", flush=True)
    time.sleep(600)


if __name__ == "__main__":
    main()
