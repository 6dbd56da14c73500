"""The peer benchmark: star_leaders beside the same job in Quix Streams (see ../README.md)."""
