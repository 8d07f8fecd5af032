"""SLSTT (arXiv 2112.05851) beside μ-BERT: model, onset -> frame flow, LOSO training
(docs/slstt.md). Entry point for the CLI: ``finetune_slstt``."""
from .flow import (clip_flows, flow_augment, flows_from_onset, sample_indices, table_flows,
                   tvl1_unavailable_reason)
from .model import (AGGREGATORS, SLSTT, SLSTT_CONFIGS, SLSTTConfig, create_slstt,
                    get_slstt_config)
from .train import finetune_slstt, load_slstt, slstt_predictions, train_slstt_fold

__all__ = ["SLSTT", "SLSTTConfig", "SLSTT_CONFIGS", "AGGREGATORS", "create_slstt", "get_slstt_config",
           "flows_from_onset", "sample_indices", "clip_flows", "table_flows", "flow_augment",
           "tvl1_unavailable_reason", "finetune_slstt", "slstt_predictions", "train_slstt_fold",
           "load_slstt"]
