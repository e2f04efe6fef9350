"""Viewer identity, the session table and its rules, and the state file."""
