"""Python side of the MaskNet server: the reference model and its tools.

    protos             Python modules of proto/ and of the parity fixtures
    safetensors_io     the weights file (F32, BF16)
    config             model_config.pbtxt: files, widths, checks, builders
    features           ranker.proto Features <-> per-field tensors
    reference          the reference MaskNet (PyTorch): ground truth for parity
    export             writing and reading model versions, strictly checked
    checkpoints        reading other frameworks' checkpoints; which framework
    twitter_import     the-algorithm-ml's heavy ranker (checkpoint + YAML) -> ours
    fuxictr_import     FuxiCTR's MaskNet (checkpoint + YAML + feature_map.json)
    torcheasyrec_import  TorchEasyRec's MaskNet (checkpoint + pipeline config)
    textproto          protobuf text read without its schema (other configs)
    reference_configs  the reference configs of MASKNET.md and the variants
    fixtures           parity fixtures for the C++ server
    synthetic          synthetic home-timeline click data
    metrics            ROC AUC
    train              training and exporting the demo model

Run with /usr/bin/python3 and tools/ on sys.path (the CLIs in tools/ are).
"""
