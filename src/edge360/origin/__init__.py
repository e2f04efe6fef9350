"""The origin role: the media root as answers."""
