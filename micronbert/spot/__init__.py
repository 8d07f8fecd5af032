"""Spotting micro- and macro-expressions in long videos, and the MEGC evaluation:
``frames`` (PyAV or DALI, chunks, face boxes), ``scorers``, ``intervals`` (curve ->
intervals), ``megc`` (scoring, p fitted LOSO), ``run`` (a video or a set, written out).

Per frame t, a motion score from a pair (frame t - k, frame t) of face crops:

- ``ModelScorer``: μ-BERT's DMA micro-motion map ``1 - D / max(D)`` (docs/method.md §3) of the
  pair, weighted by the PoI scores S of frame t: ``sum_i S_i (1 - D_i / max D)``;
- ``FlowScorer``: an MDMD-style optical-flow score (MEGC 2020's baseline method): Farneback
  flow of the pair with the head's motion removed (global shift by phase correlation, then
  the median flow), per block of a 6x6 grid the mean
  magnitude of the vectors in the block's main direction (8 bins), the mean of the top
  third of the blocks.

Both go through the same post-processing (``intervals_from_scores``): a symmetric score
``f(t) = (d(t) + d(t + k)) / 2`` (frame t against t - k and t + k, as MDMD compares the
current frame with a head and a tail frame), a moving average, a slow baseline removed
(running median), MEGC's per-video adaptive threshold ``mean + p (max - mean)``, runs
above it merged across gaps up to 0.5 s, the peak of each run as apex; intervals shorter
than 0.2 s dropped (the MEGC baseline's lower bound), micro = at most 0.5 s, macro longer.

Videos are streamed in chunks (``window`` frames): one face box per chunk (OpenCV Haar,
``faces.clip_face_box``), so the crop follows the face; both frames of a pair are cut with
the box of the later frame, so a box change between chunks is never read as motion.

MEGC scoring (``megc_counts``): a proposal is a true positive when its IoU with a
ground-truth interval of its class is >= 0.5, each ground truth matched at most once;
precision, recall and F1 for micro, macro and overall (counts summed) over the set.
"""
from ..data.dali import DALI_CPU_CODECS, iter_frames_dali
from ..viz import save_score_curves as plot_scores
from .frames import chunk_box, chunks, frame_source, iter_frames
from .intervals import KINDS, SpotParams, intervals_from_curve, spot_curve, threshold_of
from .megc import P_GRID, fit_p_loso, iou, match, megc_counts, prf
from .run import format_table, score_video, spot_dataset, spot_one, write_intervals, write_map_video
from .scorers import FlowScorer, ModelScorer

__all__ = ["DALI_CPU_CODECS", "iter_frames_dali", "plot_scores", "chunk_box", "chunks", "frame_source",
           "iter_frames", "KINDS", "SpotParams", "intervals_from_curve", "spot_curve", "threshold_of",
           "P_GRID", "fit_p_loso", "iou", "match", "megc_counts", "prf", "format_table", "score_video",
           "spot_dataset", "spot_one", "write_intervals", "write_map_video", "FlowScorer", "ModelScorer"]
