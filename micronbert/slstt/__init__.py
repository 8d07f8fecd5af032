"""SLSTT (arXiv 2112.05851) beside μ-BERT: model, onset -> frame flow, LOSO training
(docs/slstt.md). Entry points: ``finetune_slstt`` (a run of its own) and ``slstt_baseline``
(its predictions as a row beside another model's)."""
from .flow import (clip_flows, flow_augment, flows_from_onset, sample_indices, table_flows,
                   tvl1_unavailable_reason)
from .model import (AGGREGATORS, SLSTT, SLSTT_CONFIGS, SLSTTConfig, create_slstt,
                    get_slstt_config)
from .train import (finetune_slstt, load_slstt, slstt_baseline, slstt_predictions,
                    train_slstt_fold)

__all__ = ["SLSTT", "SLSTTConfig", "SLSTT_CONFIGS", "AGGREGATORS", "create_slstt", "get_slstt_config",
           "flows_from_onset", "sample_indices", "clip_flows", "table_flows", "flow_augment",
           "tvl1_unavailable_reason", "finetune_slstt", "slstt_baseline", "slstt_predictions",
           "train_slstt_fold", "load_slstt"]
