"""Secure chat and file transfer between two nodes for a limited time.

BSMD's ``p2p_com`` model, kept: each side runs a ``Receiver(my_host, my_port)`` thread that
listens and a ``Sender(my_friends_host, my_friends_port)`` thread that dials the other side.
Links are mutual TLS 1.3 with the deployment's PKI (plain text only with
``insecure_plaintext=True``; or any ``edgefed.transport.Transport`` given as ``transport=``),
messages are wire-codec frames (CHAT, FILE_OFFER, FILE_ACCEPT, FILE_CHUNK, FILE_DONE, FILE_RESULT,
BYE). See docs/p2p.md.
"""

from edgefed.p2p.errors import P2PError, PeerUnreachable, TransferFailed, TransferRefused
from edgefed.p2p.files import FileOffer, TransferCallback, transfer_record
from edgefed.p2p.link import PLAINTEXT_WARNING
from edgefed.p2p.names import check_file_name, printable
from edgefed.p2p.parse import Endpoint, parse_duration, parse_endpoint, parse_size
from edgefed.p2p.progress import ProgressFactory, RichProgress
from edgefed.p2p.receiver import DEFAULT_MAX_FILE_SIZE, Receiver
from edgefed.p2p.sender import Sender

__all__ = [
    "DEFAULT_MAX_FILE_SIZE",
    "PLAINTEXT_WARNING",
    "Endpoint",
    "FileOffer",
    "P2PError",
    "PeerUnreachable",
    "ProgressFactory",
    "Receiver",
    "RichProgress",
    "Sender",
    "TransferCallback",
    "TransferFailed",
    "TransferRefused",
    "check_file_name",
    "parse_duration",
    "parse_endpoint",
    "parse_size",
    "printable",
    "transfer_record",
]
