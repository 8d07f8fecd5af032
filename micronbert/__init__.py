"""μ-BERT (Micron-BERT, CVPR 2023) with fused kernels: model, checkpoints, tools."""
from . import kernels
from .checkpoint import load_checkpoint, load_official_checkpoint, save_checkpoint
from .config import CONFIGS, MicronBERTConfig, get_config
from .model import MicronBERT, create_model

__version__ = "0.2.0"
__all__ = ["MicronBERT", "MicronBERTConfig", "create_model", "get_config", "CONFIGS",
           "load_official_checkpoint", "load_checkpoint", "save_checkpoint", "kernels"]
