"""Federation logic: chief and worker state machines, aggregation, checkpoints, events, status."""
