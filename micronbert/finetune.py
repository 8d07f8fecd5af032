"""Moved to ``micronbert.recognition.finetune``; these names stay importable from here for
one release."""
from .recognition.finetune import HOW, FinetuneConfig, Recognizer, finetune, param_groups, train_fold
from .recognition.report import results_table

__all__ = ["HOW", "FinetuneConfig", "Recognizer", "finetune", "param_groups", "train_fold", "results_table"]
