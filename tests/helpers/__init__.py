"""Code the tests share that is not a fixture (test doubles of what cannot run here)."""
