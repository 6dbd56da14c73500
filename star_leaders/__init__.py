"""star_leaders: the GitHub star leaders application (`machida --application-module star_leaders ...`)."""
from .app import (RepoEvent, RepoMetadata, RepoPartitioner, annotate_repos, application_setup, decoder,
                  deserialize, encoder, filter_interesting_events, partition_of, serialize)

__all__ = ["RepoEvent", "RepoMetadata", "RepoPartitioner", "annotate_repos", "application_setup", "decoder",
           "deserialize", "encoder", "filter_interesting_events", "partition_of", "serialize"]
