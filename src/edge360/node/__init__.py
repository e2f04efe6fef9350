"""The per-process node state: counters, owned tasks, access log."""
