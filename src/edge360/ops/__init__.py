"""The node's own endpoints: metrics, stats, health, the player page."""
