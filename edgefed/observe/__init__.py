"""What an operator watches: the chief's training history and the Prometheus metrics of a node.

Adapter level: fed by the EventBus, the driver's RoundReport and the status files, so federation/ and
ledger/ know nothing of it.
"""
