"""Data for μ-BERT: face frames, pairs (I_t, I_{t+d}), synthetic micro-expressions."""
from .synthetic import IMAGENET_MEAN, IMAGENET_STD, face_images, normalize, synthetic_pairs, warp_region

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "face_images", "normalize", "synthetic_pairs",
           "warp_region"]
