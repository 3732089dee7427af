"""hq-server: the broker (loop.py), its state and transitions (core.py), the request handlers
(handlers/) and the pure scheduler (scheduler.py)."""
