"""The edge role: store, fetch, coalescing, upstream, prefetch, admin."""
