"""Data for μ-BERT: frames, annotation sheets, pre-training pairs, synthetic micro-expressions."""
from .annotations import CLASS_MAPS, label_of, load_annotations
from .io import DataError, read_frames, write_video
from .dali import DaliPairLoader
from .pairs import PairLoader, find_clips
from .report import DataReport
from .synthetic import (IMAGENET_MEAN, IMAGENET_STD, SYNTH_CLASSES, face_images, normalize,
                        warp_region, write_pretraining_corpus, write_synthetic_dataset)

__all__ = ["CLASS_MAPS", "label_of", "load_annotations", "DataError", "read_frames", "write_video",
           "PairLoader", "DaliPairLoader", "DataReport", "find_clips", "IMAGENET_MEAN", "IMAGENET_STD", "SYNTH_CLASSES", "face_images",
           "normalize", "warp_region", "write_pretraining_corpus", "write_synthetic_dataset"]
