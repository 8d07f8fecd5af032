"""Recognition, leave-one-subject-out: ``folds`` (labelled clips, one fold per subject),
``features`` (onset/apex frames, the model's pair features), ``probe`` (``evaluate``, the
linear probe), ``finetune`` (encoder + DMA + head per fold), ``report`` (metrics,
loso.json and its pictures). finetune uses the probe; the probe never uses finetune.

The functions ``probe.probe`` and ``finetune.finetune`` are not named here, so that
``micronbert.recognition.probe`` and ``.finetune`` stay the modules."""
from .features import clip_features, frame_features, onset_apex_frames, pair_features, untrained_like
from .finetune import FinetuneConfig, Recognizer, param_groups, train_fold
from .folds import class_weights, fold_seed, labelled, loso_splits, safe_name
from .probe import evaluate, feature_baselines, loso, train_head
from .report import confusion, fold_table, metrics, results_table, summarize, write_loso

__all__ = ["clip_features", "frame_features", "onset_apex_frames", "pair_features", "untrained_like",
           "FinetuneConfig", "Recognizer", "param_groups", "train_fold",
           "class_weights", "fold_seed", "labelled", "loso_splits", "safe_name",
           "evaluate", "feature_baselines", "loso", "train_head",
           "confusion", "fold_table", "metrics", "results_table", "summarize", "write_loso"]
