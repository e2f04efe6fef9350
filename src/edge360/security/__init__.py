"""Signed tokens, client addresses, rate limits and the PROXY protocol."""
