"""Framework-neutral trainers: a model is an ordered list of numpy arrays."""
