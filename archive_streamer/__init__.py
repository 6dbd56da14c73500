"""Replays GH Archive hour files into the Kafka topic `archive_streamer.config.TOPIC`.

Modules: config (every default), hours (hour names and order), download (HTTP into a cache),
reader (files -> events, skips counted), synthetic (a deterministic stand-in for the archive),
produce (pacing and Kafka), progress, __main__ (the `archive-streamer` CLI).  See README.md here.
"""
from .config import TOPIC

__all__ = ["TOPIC"]
