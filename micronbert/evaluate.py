"""Moved to ``micronbert.recognition`` (probe, folds, features, report); these names stay
importable from here for one release."""
from .recognition.features import clip_features, frame_features, onset_apex_frames, pair_features, untrained_like
from .recognition.folds import class_weights, fold_seed, labelled, loso_splits, safe_name
from .recognition.probe import evaluate, feature_baselines, loso, probe, train_head
from .recognition.report import confusion, fold_table, metrics, summarize, write_loso

__all__ = ["clip_features", "frame_features", "onset_apex_frames", "pair_features", "untrained_like",
           "class_weights", "fold_seed", "labelled", "loso_splits", "safe_name",
           "evaluate", "feature_baselines", "loso", "probe", "train_head",
           "confusion", "fold_table", "metrics", "summarize", "write_loso"]
