"""Synthetic home-timeline click data: requests of one viewer and many tweets.

The labels follow a hidden logistic model whose strongest terms are feature
INTERACTIONS, so a model must learn products of features (what a MaskNet's
instance-guided masks are for) to rank well:

- viewer_author_affinity: the dot product of the viewer's and the author's
  latent tastes; the features carry noisy copies of both (16-d embeddings).
- country_topic_affinity: how much the viewer's country likes the tweet's
  topics (mean over the topics; 0 for a tweet without topics).
- young_media: has_media x (tweet younger than 4 hours).
- popularity_match: log follow count of the viewer x log likes of the tweet
  (both standardized): heavy followers like popular tweets.

Plus main effects (author quality and viewer activity, learnable only through
the id embeddings; age) and logit noise. Base rates: click ~20%, like ~9%.
Everything is drawn from numpy's PCG64 with the given seed.
"""

import dataclasses

import numpy as np
import torch

from masknet_tools import config
from masknet_tools import features
from masknet_tools.protos import config_pb2
from masknet_tools.protos import ranker_pb2

TASKS = ("click", "like")
MAX_TOPICS = 4
_ID_BUCKETS = 4096


@dataclasses.dataclass(frozen=True)
class SyntheticOptions:
    """How much data to draw, and from what population."""
    num_requests: int = 6000
    min_candidates: int = 20
    max_candidates: int = 60
    num_viewers: int = 2000
    num_authors: int = 3000
    num_countries: int = 12
    num_topics: int = 24
    embedding_dim: int = 16
    seed: int = 0


def schema_fields(options):
    """The input fields in schema order: the viewer's, then the tweet's."""
    context, candidate = config_pb2.CONTEXT, config_pb2.CANDIDATE
    log_scalar = dict(transform=config_pb2.SIGNED_LOG1P,
                      affine=True,
                      clamp_min=-5,
                      clamp_max=5)
    return [
        config.categorical_field("viewer_id", context, _ID_BUCKETS, 8),
        config.categorical_field("viewer_country",
                                 context,
                                 options.num_countries,
                                 4,
                                 bucket_rule=config_pb2.IDENTITY),
        config.dense_field("viewer_embedding", context, options.embedding_dim),
        config.dense_field("viewer_follow_count", context, **log_scalar),
        config.categorical_field("author_id", candidate, _ID_BUCKETS, 8),
        config.categorical_field("tweet_topics",
                                 candidate,
                                 options.num_topics,
                                 8,
                                 bucket_rule=config_pb2.IDENTITY,
                                 pooling=config_pb2.MEAN,
                                 max_ids=MAX_TOPICS,
                                 allow_empty=True),
        config.dense_field("author_embedding", candidate,
                           options.embedding_dim),
        config.dense_field("tweet_age_hours", candidate, **log_scalar),
        config.dense_field("engagement_counts",
                           candidate,
                           3,
                           config_pb2.REPLACE_WITH_ZERO,
                           config_pb2.SIGNED_LOG1P,
                           batch_norm=config.batch_norm(1e-5, affine=True),
                           clamp_min=-5,
                           clamp_max=5),
        config.dense_field("has_media", candidate),
    ]


def _standardize(x):
    return (x - x.mean()) / x.std()


def _as_sent(values):
    """float64 tensor of `values` rounded to float32, as requests carry them."""
    return torch.from_numpy(values.astype(np.float32).astype(np.float64))


@dataclasses.dataclass
class HomeTimelineData:
    """Requests of one viewer and their candidates, with labels.

    Attributes:
      options: the SyntheticOptions drawn from.
      request_of: [N] the request index of each candidate row.
      context: field name to an array with one row per request.
      candidate: field name to an array with one row per candidate; the
        multi-id field tweet_topics is [N, MAX_TOPICS] padded, with
        "tweet_topics_count" [N].
      labels: task name to [N] float 0/1.
      interactions: interaction name (see the module doc) to [N].
    """
    options: SyntheticOptions
    request_of: np.ndarray
    context: dict
    candidate: dict
    labels: dict
    interactions: dict

    @property
    def num_rows(self):
        return len(self.request_of)

    def field_batch(self, rows):
        """The FieldBatch of candidate rows `rows` (an int array).

        Dense values are rounded to float32, as a request would carry them.
        """
        requests = self.request_of[rows]
        dense, ids, counts = {}, {}, {}
        for name in ("viewer_embedding", "viewer_follow_count"):
            dense[name] = _as_sent(self.context[name][requests])
        for name in ("author_embedding", "tweet_age_hours", "engagement_counts",
                     "has_media"):
            dense[name] = _as_sent(self.candidate[name][rows])
        for name in ("viewer_id", "viewer_country"):
            ids[name] = torch.from_numpy(self.context[name][requests][:, None])
            counts[name] = torch.ones(len(rows), dtype=torch.int64)
        ids["author_id"] = torch.from_numpy(
            self.candidate["author_id"][rows][:, None])
        counts["author_id"] = torch.ones(len(rows), dtype=torch.int64)
        ids["tweet_topics"] = torch.from_numpy(
            self.candidate["tweet_topics"][rows])
        counts["tweet_topics"] = torch.from_numpy(
            self.candidate["tweet_topics_count"][rows])
        return features.FieldBatch(size=len(rows),
                                   dense=dense,
                                   ids=ids,
                                   counts=counts)

    def rank_request(self, request, model_name=""):
        """Request number `request` as a ranker_pb2.RankRequest.

        Candidate ids are the candidates' row numbers.
        """
        model_config = config_pb2.ModelConfig(
            fields=schema_fields(self.options))
        rows = np.flatnonzero(self.request_of == request)
        context = {
            name: np.atleast_1d(values[request])
            for name, values in self.context.items()
        }
        message = ranker_pb2.RankRequest(model_name=model_name)
        message.context.CopyFrom(
            features.make_features(model_config, config_pb2.CONTEXT, context))
        for row in rows:
            values = {
                name: np.atleast_1d(self.candidate[name][row])
                for name in ("author_id", "author_embedding", "tweet_age_hours",
                             "engagement_counts", "has_media")
            }
            count = self.candidate["tweet_topics_count"][row]
            values["tweet_topics"] = self.candidate["tweet_topics"][row][:count]
            candidate = message.candidates.add(id=int(row))
            candidate.features.CopyFrom(
                features.make_features(model_config, config_pb2.CANDIDATE,
                                       values))
        return message


def generate(options):
    """Draws a HomeTimelineData from `options`; deterministic in the seed."""
    rng = np.random.default_rng(options.seed)
    dim = options.embedding_dim
    num_viewers, num_authors = options.num_viewers, options.num_authors

    # The population: viewers, authors, and how each country likes each topic.
    viewer_raw_id = rng.integers(1 << 40, 1 << 62, num_viewers)
    viewer_taste = rng.normal(0, 0.5, (num_viewers, dim))
    viewer_activity = rng.normal(0, 0.5, num_viewers)
    viewer_country = np.minimum(
        rng.geometric(0.25, num_viewers) - 1, options.num_countries - 1)
    viewer_follows = np.floor(rng.lognormal(5, 1.5, num_viewers))
    author_raw_id = rng.integers(1 << 40, 1 << 62, num_authors)
    author_style = rng.normal(0, 0.5, (num_authors, dim))
    author_quality = rng.normal(0, 0.5, num_authors)
    country_topic = rng.normal(0, 1,
                               (options.num_countries, options.num_topics))

    # Requests: a viewer and a feed of candidates.
    num_requests = options.num_requests
    viewer_of_request = rng.integers(0, num_viewers, num_requests)
    sizes = rng.integers(options.min_candidates, options.max_candidates + 1,
                         num_requests)
    request_of = np.repeat(np.arange(num_requests), sizes)
    n = len(request_of)
    viewer = viewer_of_request[request_of]
    author = rng.integers(0, num_authors, n)

    # The candidate tweets.
    topic_count = rng.integers(0, MAX_TOPICS + 1, n)
    topics = rng.integers(0, options.num_topics, (n, MAX_TOPICS))
    topic_present = np.arange(MAX_TOPICS)[None, :] < topic_count[:, None]
    topics[~topic_present] = 0
    age_hours = rng.exponential(10, n)
    has_media = (rng.random(n) < 0.3).astype(np.float64)
    log_likes_mean = (2 + 1.5 * author_quality[author] -
                      0.2 * np.log1p(age_hours))
    likes = np.floor(rng.lognormal(log_likes_mean, 1.2))
    retweets = np.floor(likes * rng.beta(1, 6, n))
    replies = rng.poisson(0.05 * likes + 0.5)
    engagement = np.stack([likes, retweets, replies], axis=1).astype(float)
    engagement[rng.random(engagement.shape) < 0.03] = np.nan  # Missing.

    # The labels.
    topic_scores = country_topic[viewer_country[viewer][:, None], topics]
    follows_z = _standardize(np.log1p(viewer_follows[viewer]))
    interactions = {
        "viewer_author_affinity":
            np.sum(viewer_taste[viewer] * author_style[author], axis=1),
        "country_topic_affinity":
            np.sum(topic_scores * topic_present, axis=1) /
            np.maximum(topic_count, 1),
        "young_media":
            has_media * (age_hours < 4),
        "popularity_match":
            follows_z * _standardize(np.log1p(likes)),
    }
    main_effects = (author_quality[author] + viewer_activity[viewer] -
                    0.25 * np.log1p(age_hours))
    click_logit = (-1.6 + 1.2 * interactions["viewer_author_affinity"] +
                   0.9 * interactions["country_topic_affinity"] +
                   1.0 * interactions["young_media"] +
                   0.4 * interactions["popularity_match"] + main_effects +
                   rng.normal(0, 0.5, n))
    like_logit = (-3.2 + 1.6 * interactions["viewer_author_affinity"] +
                  0.5 * interactions["country_topic_affinity"] +
                  0.6 * has_media + 0.8 * interactions["popularity_match"] +
                  main_effects + rng.normal(0, 0.5, n))
    labels = {}
    for task, logit in (("click", click_logit), ("like", like_logit)):
        labels[task] = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(float)

    # The features: noisy copies of the latent tastes, raw ids and counts.
    viewer_noise = rng.normal(0, 0.15, (num_requests, dim))
    author_noise = rng.normal(0, 0.15, (n, dim))
    context = {
        "viewer_id": viewer_raw_id[viewer_of_request],
        "viewer_country": viewer_country[viewer_of_request],
        "viewer_embedding": viewer_taste[viewer_of_request] + viewer_noise,
        "viewer_follow_count": viewer_follows[viewer_of_request][:, None],
    }
    candidate = {
        "author_id": author_raw_id[author],
        "tweet_topics": topics,
        "tweet_topics_count": topic_count,
        "author_embedding": author_style[author] + author_noise,
        "tweet_age_hours": age_hours[:, None],
        "engagement_counts": engagement,
        "has_media": has_media[:, None],
    }
    return HomeTimelineData(options, request_of, context, candidate, labels,
                            interactions)
