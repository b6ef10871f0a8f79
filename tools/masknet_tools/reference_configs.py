"""The reference model configs by name (MASKNET.md, "Reference configurations").

- paper-criteo-parallel, paper-criteo-serial: the paper's Criteo models.
- twitter-recap: Twitter's heavy ranker at full size (benchmarks only).
- twitter-recap-small: the same shape scaled down for committed fixtures.
- variant-*: small models (d 34-48) that together use every option of the
  format, for parity fixtures.
"""

from masknet_tools import config
from masknet_tools.protos import config_pb2

CONTEXT = config_pb2.CONTEXT
CANDIDATE = config_pb2.CANDIDATE
NO_ACTIVATION = config_pb2.ACTIVATION_NONE

# Twitter's heavy-ranker heads: the engagement labels of the open-sourced recap.
_RECAP_TASKS = (
    "is_favorited",
    "is_retweeted",
    "is_replied",
    "is_replied_reply_engaged_by_author",
    "is_good_clicked_convo_desc_favorited_or_replied",
    "is_good_clicked_convo_desc_v2",
    "is_profile_clicked_and_profile_engaged",
    "is_video_playback_50",
    "is_negative_feedback_v2",
    "is_report_tweet_clicked",
)


def _model(description, fields, masknet, mlp=(), tasks=(), input_norms=()):
    return config_pb2.ModelConfig(description=description,
                                  fields=fields,
                                  input_norms=input_norms,
                                  masknet=masknet,
                                  mlp=mlp,
                                  tasks=tasks)


def _criteo_fields():
    """39 categorical fields (13 bucketized integers, 26 categorical).

    The first 5 are CONTEXT, the rest CANDIDATE.
    """
    names = [f"i{i}" for i in range(1, 14)] + [f"c{i}" for i in range(1, 27)]
    return [
        config.categorical_field(name,
                                 CONTEXT if i < 5 else CANDIDATE,
                                 num_buckets=64,
                                 embedding_dim=10)
        for i, name in enumerate(names)
    ]


def paper_criteo_parallel():
    blocks = [config.mask_block(400, aggregation_size=780) for _ in range(3)]
    return _model(
        "ParaMaskNet of the MaskNet paper on Criteo-shaped inputs "
        "(39 fields x 10, LN_EMB).",
        _criteo_fields(),
        config.masknet(config_pb2.PARALLEL,
                       blocks,
                       input_norm=config_pb2.FIELD_LAYER_NORM),
        mlp=[config.dense_layer(400) for _ in range(3)],
        tasks=[config.task_head("click")])


def paper_criteo_serial():
    blocks = [config.mask_block(400, aggregation_size=780) for _ in range(3)]
    return _model(
        "SerMaskNet of the MaskNet paper on Criteo-shaped inputs "
        "(39 fields x 10, LN_EMB).",
        _criteo_fields(),
        config.masknet(config_pb2.SERIAL,
                       blocks,
                       input_norm=config_pb2.FIELD_LAYER_NORM),
        tasks=[config.task_head("click")])


def _twitter_recap(description, continuous, binary, embedding, block_width,
                   mlp_width, head_sizes):
    """Twitter's heavy ranker: recap inputs, 4 parallel blocks, 10 towers."""
    fields = [
        config.dense_field("continuous",
                           CANDIDATE,
                           continuous,
                           config_pb2.REPLACE_WITH_ZERO,
                           config_pb2.SIGNED_LOG1P,
                           batch_norm=config.batch_norm(1e-5),
                           clamp_min=-5,
                           clamp_max=5),
        config.dense_field("binary", CANDIDATE, binary,
                           config_pb2.REPLACE_WITH_ZERO),
        config.dense_field("user_follow_embedding", CONTEXT, embedding),
        config.dense_field("user_engagement_embedding", CONTEXT, embedding),
        config.dense_field("author_follow_embedding", CANDIDATE, embedding),
    ]
    input_norms = [
        config.input_norm("continuous_binary", ["continuous", "binary"],
                          eps=1e-3),
        config.input_norm("user_follow_embedding", ["user_follow_embedding"]),
        config.input_norm("user_engagement_embedding",
                          ["user_engagement_embedding"]),
        config.input_norm("author_follow_embedding",
                          ["author_follow_embedding"]),
    ]
    blocks = [
        config.mask_block(block_width,
                          aggregation_size=block_width,
                          hidden_bias=True,
                          activation=NO_ACTIVATION) for _ in range(4)
    ]
    return _model(
        description,
        fields,
        config.masknet(config_pb2.PARALLEL, blocks),
        mlp=[config.dense_layer(mlp_width)],
        tasks=[config.task_head(name, head_sizes) for name in _RECAP_TASKS],
        input_norms=input_norms)


def twitter_recap():
    return _twitter_recap(
        "Twitter's home-timeline heavy ranker (the-algorithm-ml recap "
        "MaskNet), full size.",
        continuous=2117,
        binary=59,
        embedding=200,
        block_width=1024,
        mlp_width=2048,
        head_sizes=(256, 128))


def twitter_recap_small():
    return _twitter_recap(
        "Twitter's heavy ranker shape, scaled down for parity fixtures.",
        continuous=211,
        binary=13,
        embedding=20,
        block_width=128,
        mlp_width=256,
        head_sizes=(32, 16))


def variant_serial_block_ln():
    """Serial; per-block LAYER_NORM, hidden bias, no activation.

    Aggregation widths are reductions of the mask input width.
    """
    fields = [
        config.dense_field("viewer_age",
                           CONTEXT,
                           affine=True,
                           clamp_min=-2,
                           clamp_max=2),
        config.dense_field("item_price",
                           CANDIDATE,
                           transform=config_pb2.SIGNED_LOG1P,
                           batch_norm=config.batch_norm(1e-3, affine=True),
                           clamp_max=1.5),
        config.dense_field("item_stats",
                           CANDIDATE,
                           6,
                           config_pb2.REPLACE_WITH_ZERO,
                           config_pb2.SIGNED_LOG1P,
                           batch_norm=config.batch_norm(),
                           clamp_min=-2.5,
                           clamp_max=2.5),
        config.categorical_field("viewer_id", CONTEXT, 97, 8),
        config.categorical_field("item_id", CANDIDATE, 101, 8),
        config.dense_field("viewer_vector", CONTEXT, 16),
        config.categorical_field("item_category",
                                 CANDIDATE,
                                 12,
                                 8,
                                 bucket_rule=config_pb2.IDENTITY),
    ]
    by_mask_input = dict(reduction_base=config_pb2.MASK_INPUT_WIDTH,
                         hidden_bias=True,
                         activation=NO_ACTIVATION,
                         input_norm=config_pb2.LAYER_NORM)
    blocks = [
        config.mask_block(32, reduction_factor=0.5, **by_mask_input),
        config.mask_block(24,
                          reduction_factor=1.25,
                          input_norm_eps=1e-3,
                          **by_mask_input),
        config.mask_block(24,
                          reduction_factor=0.75,
                          layer_norm_eps=1e-3,
                          **by_mask_input),
    ]
    return _model(
        "Serial MaskNet with per-block LayerNorm (Twitter-style blocks).",
        fields,
        config.masknet(config_pb2.SERIAL, blocks),
        mlp=[config.dense_layer(32, batch_norm=config.batch_norm(affine=True))],
        tasks=[
            config.task_head("click", [16]),
            config.task_head("purchase", negative_sampling_rate=0.25)
        ],
        input_norms=[
            config.input_norm("numeric",
                              ["viewer_age", "item_price", "item_stats"],
                              eps=1e-3),
            config.input_norm("viewer_vector", ["viewer_vector"])
        ])


def variant_parallel_easyrec():
    """Parallel, TensorFlow-EasyRec-style: the masks read the shared LN of V.

    Aggregation widths are reductions of the masked input width.
    """
    fields = [
        config.categorical_field("user_id", CONTEXT, 50, 8),
        config.categorical_field("doc_id", CANDIDATE, 80, 8),
        config.categorical_field("query_terms", CONTEXT, 64, 8, max_ids=4),
        config.dense_field("doc_features",
                           CANDIDATE,
                           8,
                           config_pb2.REPLACE_WITH_ZERO,
                           batch_norm=config.batch_norm(),
                           clamp_min=-3),
        config.dense_field("doc_ctr", CANDIDATE, affine=True, clamp_max=2),
        config.categorical_field("user_segment",
                                 CONTEXT,
                                 7,
                                 4,
                                 bucket_rule=config_pb2.IDENTITY),
        config.dense_field("doc_quality",
                           CANDIDATE,
                           3,
                           clamp_min=-1,
                           clamp_max=1),
    ]
    by_masked_input = dict(reduction_base=config_pb2.MASKED_INPUT_WIDTH)
    blocks = [
        config.mask_block(32, reduction_factor=1.5, **by_masked_input),
        config.mask_block(32,
                          reduction_factor=0.5,
                          input_norm=config_pb2.LAYER_NORM,
                          **by_masked_input),
    ]
    return _model(
        "Parallel MaskNet as EasyRec builds it: masks read LN(V).",
        fields,
        config.masknet(config_pb2.PARALLEL,
                       blocks,
                       input_norm=config_pb2.LAYER_NORM,
                       mask_input=config_pb2.MASK_INPUT_NORMALIZED),
        mlp=[config.dense_layer(24, batch_norm=config.batch_norm())],
        tasks=[
            config.task_head("ctr", [8],
                             batch_norm=config.batch_norm(affine=True)),
            config.task_head("cvr")
        ],
        input_norms=[
            config.input_norm("doc_dense", ["doc_features", "doc_ctr"])
        ])


def variant_serial_field_ln():
    """Serial with FIELD_LAYER_NORM in block 0.

    Multi-id SUM and MEAN fields, some of which may be empty.
    """
    fields = [
        config.categorical_field("viewer_topics",
                                 CONTEXT,
                                 20,
                                 6,
                                 bucket_rule=config_pb2.IDENTITY,
                                 pooling=config_pb2.MEAN,
                                 max_ids=5,
                                 allow_empty=True),
        config.categorical_field("item_tags",
                                 CANDIDATE,
                                 40,
                                 6,
                                 pooling=config_pb2.MEAN,
                                 max_ids=6,
                                 allow_empty=True),
        config.dense_field("viewer_embedding", CONTEXT, 8),
        config.dense_field("item_signals",
                           CANDIDATE,
                           4,
                           config_pb2.REPLACE_WITH_ZERO,
                           config_pb2.SIGNED_LOG1P,
                           affine=True,
                           clamp_min=-3,
                           clamp_max=3),
        config.categorical_field("item_authors", CANDIDATE, 30, 6, max_ids=3),
        config.categorical_field("viewer_history",
                                 CONTEXT,
                                 1000,
                                 4,
                                 max_ids=8,
                                 allow_empty=True),
    ]
    blocks = [
        config.mask_block(24,
                          reduction_factor=2,
                          reduction_base=config_pb2.MASKED_INPUT_WIDTH,
                          input_norm=config_pb2.FIELD_LAYER_NORM),
        config.mask_block(16,
                          reduction_factor=1.5,
                          hidden_bias=True,
                          reduction_base=config_pb2.MASKED_INPUT_WIDTH),
        config.mask_block(16,
                          aggregation_size=20,
                          input_norm=config_pb2.LAYER_NORM),
    ]
    return _model(
        "Serial MaskNet whose first block normalizes each field "
        "(LN_EMB in the block).",
        fields,
        config.masknet(config_pb2.SERIAL, blocks),
        tasks=[
            config.task_head("engage"),
            config.task_head("share", [8], negative_sampling_rate=0.5)
        ],
        input_norms=[
            config.input_norm("viewer_embedding", ["viewer_embedding"])
        ])


def variant_serial_fuxictr():
    """Serial, as FuxiCTR builds it: per-field LN of V shared by the blocks,
    scalar fields embedded as value x vector, no hidden bias, and blocks
    without their LayerNorm (net_layernorm: false), with and without ReLU."""
    fields = [
        config.categorical_field("user_id",
                                 CONTEXT,
                                 25,
                                 5,
                                 bucket_rule=config_pb2.IDENTITY),
        config.dense_field("user_age", CONTEXT, embedding_dim=5),
        config.categorical_field("item_id",
                                 CANDIDATE,
                                 40,
                                 5,
                                 bucket_rule=config_pb2.IDENTITY),
        config.dense_field("item_price",
                           CANDIDATE,
                           non_finite=config_pb2.REPLACE_WITH_ZERO,
                           transform=config_pb2.SIGNED_LOG1P,
                           batch_norm=config.batch_norm(1e-5, affine=True),
                           clamp_min=-2.5,
                           clamp_max=2.5,
                           embedding_dim=5),
        config.categorical_field("item_tags",
                                 CANDIDATE,
                                 30,
                                 5,
                                 bucket_rule=config_pb2.IDENTITY,
                                 pooling=config_pb2.MEAN,
                                 max_ids=4,
                                 allow_empty=True),
        config.dense_field("item_ctr", CANDIDATE, embedding_dim=5,
                           affine=True),
    ]
    blocks = [
        config.mask_block(20, aggregation_size=36),
        config.mask_block(16, aggregation_size=30, layer_norm=False),
        config.mask_block(12,
                          aggregation_size=24,
                          activation=NO_ACTIVATION,
                          layer_norm=False),
    ]
    return _model(
        "Serial MaskNet as FuxiCTR builds it: embedded numeric fields, "
        "per-field LN, blocks without LayerNorm.",
        fields,
        config.masknet(config_pb2.SERIAL,
                       blocks,
                       input_norm=config_pb2.FIELD_LAYER_NORM),
        tasks=[config.task_head("click"),
               config.task_head("like", [8])])


def variant_parallel_field_ln():
    """Parallel with per-block FIELD_LAYER_NORM.

    An input norm covers a group of fields of both scopes and kinds.
    """
    fields = [
        config.categorical_field("device",
                                 CONTEXT,
                                 5,
                                 4,
                                 bucket_rule=config_pb2.IDENTITY),
        config.dense_field("item_vector", CANDIDATE, 12),
        config.dense_field("hour", CONTEXT, 2, affine=True),
        config.categorical_field("item_id", CANDIDATE, 128, 8),
        config.dense_field("item_counts",
                           CANDIDATE,
                           4,
                           config_pb2.REPLACE_WITH_ZERO,
                           config_pb2.SIGNED_LOG1P,
                           batch_norm=config.batch_norm(affine=True),
                           clamp_min=-4,
                           clamp_max=4),
        config.dense_field("viewer_embedding", CONTEXT, 10),
    ]
    blocks = [
        config.mask_block(24,
                          reduction_factor=0.75,
                          reduction_base=config_pb2.MASK_INPUT_WIDTH,
                          input_norm=config_pb2.FIELD_LAYER_NORM),
        config.mask_block(16,
                          aggregation_size=16,
                          hidden_bias=True,
                          activation=NO_ACTIVATION,
                          input_norm=config_pb2.FIELD_LAYER_NORM,
                          input_norm_eps=1e-3),
        config.mask_block(16,
                          reduction_factor=1,
                          reduction_base=config_pb2.MASKED_INPUT_WIDTH),
    ]
    return _model(
        "Parallel MaskNet with a per-field LayerNorm in two of its blocks.",
        fields,
        config.masknet(config_pb2.PARALLEL, blocks),
        mlp=[config.dense_layer(32),
             config.dense_layer(16)],
        tasks=[
            config.task_head("like"),
            config.task_head("reply", [8]),
            config.task_head("repost", negative_sampling_rate=0.1)
        ],
        input_norms=[
            config.input_norm("mixed", ["hour", "item_id", "item_counts"])
        ])


def variant_parallel_normalized_field_mask():
    """Parallel; masks read the shared FIELD_LAYER_NORM of V."""
    fields = [
        config.categorical_field("user_id", CONTEXT, 200, 6),
        config.categorical_field("user_city",
                                 CONTEXT,
                                 30,
                                 6,
                                 bucket_rule=config_pb2.IDENTITY),
        config.categorical_field("item_id", CANDIDATE, 300, 6),
        config.categorical_field("item_brand", CANDIDATE, 50, 6),
        config.categorical_field("item_tags",
                                 CANDIDATE,
                                 60,
                                 6,
                                 pooling=config_pb2.MEAN,
                                 max_ids=4,
                                 allow_empty=True),
        config.dense_field("item_dense",
                           CANDIDATE,
                           6,
                           batch_norm=config.batch_norm(affine=True)),
    ]
    blocks = [
        config.mask_block(24, aggregation_size=48),
        config.mask_block(24,
                          reduction_factor=2,
                          reduction_base=config_pb2.MASK_INPUT_WIDTH,
                          hidden_bias=True,
                          activation=NO_ACTIVATION,
                          input_norm=config_pb2.LAYER_NORM),
    ]
    return _model(
        "Parallel MaskNet whose masks read the per-field normalized V.",
        fields,
        config.masknet(config_pb2.PARALLEL,
                       blocks,
                       input_norm=config_pb2.FIELD_LAYER_NORM,
                       mask_input=config_pb2.MASK_INPUT_NORMALIZED),
        mlp=[config.dense_layer(24)],
        tasks=[config.task_head("ctr")])


_BUILDERS = {
    "paper-criteo-parallel":
        paper_criteo_parallel,
    "paper-criteo-serial":
        paper_criteo_serial,
    "twitter-recap":
        twitter_recap,
    "twitter-recap-small":
        twitter_recap_small,
    "variant-serial-block-ln":
        variant_serial_block_ln,
    "variant-parallel-easyrec":
        variant_parallel_easyrec,
    "variant-serial-field-ln":
        variant_serial_field_ln,
    "variant-parallel-field-ln":
        variant_parallel_field_ln,
    "variant-serial-fuxictr":
        variant_serial_fuxictr,
    "variant-parallel-normalized-field-mask":
        variant_parallel_normalized_field_mask,
}

NAMES = tuple(_BUILDERS)


def get(name):
    """A fresh ModelConfig of the config `name`; KeyError if unknown."""
    return _BUILDERS[name]()
