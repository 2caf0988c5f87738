"""edgefed: federated averaging for small devices over mutual-TLS sockets, with a BSMD ledger."""

__version__ = "0.1.0"
