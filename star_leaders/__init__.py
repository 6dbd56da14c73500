"""star_leaders: the GitHub star leaders application (`machida --application-module star_leaders ...`)."""
from .app import (add_star_leaders, annotate_repos, application_setup, deserialize, encoder,
                  kafka_source_and_sink, serialize)
from .events import RepoEvent, decoder, filter_interesting_events
from .state import RepoMetadata, RepoPartitioner, partition_of

__all__ = ["RepoEvent", "RepoMetadata", "RepoPartitioner", "add_star_leaders", "annotate_repos",
           "application_setup", "decoder", "deserialize", "encoder", "filter_interesting_events",
           "kafka_source_and_sink", "partition_of", "serialize"]
