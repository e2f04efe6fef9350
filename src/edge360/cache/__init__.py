"""The cache tiers: memory and disk, synchronous and byte-bounded, no timers."""
