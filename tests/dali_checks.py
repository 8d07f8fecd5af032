"""DALI loader checks, run in a subprocess by test_data.py (see _in_subprocess there)."""
import os
import re

import numpy as np
import pytest
import torch

from micronbert.data.io import DataError, write_video
from micronbert.data.dali import DaliPairLoader
from micronbert.data.pairs import PairLoader, find_clips


def jpeg_frames_match(synth):
    clips = find_clips(synth)
    kw = dict(size=64, batch_size=4, delta=(1, 4), seed=2, samples_per_epoch=16)
    cpu, dali = list(PairLoader(clips, **kw)), list(DaliPairLoader(clips, device="cpu", **kw))
    assert len(cpu) == len(dali) == 4
    for a, b in zip(cpu, dali):
        assert torch.equal(a["index"], b["index"]) and torch.equal(a["swap_mask"], b["swap_mask"])
        for k in ("frame_t", "frame_next"):
            diff = (a[k].int() - b[k].int()).abs()
            assert diff.float().mean() < 0.5 and diff.max() <= 8, (k, diff.float().mean(), diff.max())


def video_matches(tmp, codec="mjpeg", ext=".avi"):
    rng = np.random.default_rng(0)
    clips = []
    for i in range(3):
        base = rng.integers(0, 255, (1, 48, 48, 3))
        frames = np.clip(base + rng.integers(-20, 20, (10, 48, 48, 3)), 0, 255).astype(np.uint8)
        clips.append(os.path.join(tmp, f"v{i}{ext}"))
        write_video(frames, clips[-1], fps=10, codec=codec)
    kw = dict(size=48, batch_size=3, delta=(1, 5), seed=1, samples_per_epoch=9)
    cpu, dali = list(PairLoader(clips, **kw)), list(DaliPairLoader(clips, device="cpu", **kw))
    assert len(cpu) == len(dali) == 3
    for a, b in zip(cpu, dali):
        for k in ("frame_t", "frame_next"):
            assert (a[k].int() - b[k].int()).abs().float().mean() < 0.5


def bad_input(tmp, synth):
    bad = os.path.join(tmp, "broken.avi")
    with open(bad, "wb") as f:
        f.write(b"junk" * 10)
    with pytest.raises(DataError, match="one kind"):
        DaliPairLoader(find_clips(synth) + [bad], 64, 2, device="cpu")
    with pytest.raises(DataError, match="broken.avi"):
        list(DaliPairLoader([bad], 64, 2, device="cpu", samples_per_epoch=4))
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="needs CUDA"):
            DaliPairLoader(find_clips(synth), 64, 2, device="gpu")


def face_crop_matches(tmp):
    """Face boxes crop inside the DALI pipeline (ROI JPEG decoding, video slice) exactly as
    the CPU loader crops them."""
    from PIL import Image
    from skimage import data
    img = data.astronaut()[:, 40:440]  # 512 x 400, the face off-centre
    rng = np.random.default_rng(0)
    folder = os.path.join(tmp, "faces", "c0")
    os.makedirs(folder)
    frames = [np.roll(img, k % 3, axis=1) for k in range(6)]
    for k, f in enumerate(frames):
        Image.fromarray(f).save(os.path.join(folder, f"img{k + 1}.jpg"), quality=95)
    video = os.path.join(tmp, "faces.avi")
    write_video(np.stack(frames), video, fps=10, codec="mjpeg")
    cache = os.path.join(tmp, "boxes")
    for clips in ([folder], [video]):
        kw = dict(size=64, batch_size=2, delta=(1, 3), seed=int(rng.integers(100)), samples_per_epoch=4,
                  face_cache=cache)
        cpu, dali = PairLoader(clips, **kw), DaliPairLoader(clips, device="cpu", **kw)
        cpu_batches, dali_batches = list(cpu), list(dali)
        assert len(cpu_batches) == len(dali_batches) == 2
        for a, b in zip(cpu_batches, dali_batches):
            for k in ("frame_t", "frame_next"):
                diff = (a[k].int() - b[k].int()).abs()
                assert diff.float().mean() < 1.0, (clips, k, diff.float().mean())
        x0, y0, x1, y1 = dali.face_box(clips[0])
        assert x1 - x0 < 400 and 150 < (x0 + x1) / 2 + 40 < 260  # a face-sized box on the face
    assert len(os.listdir(cache)) == 2  # one box per clip, cached


def prefetch_matches_sync(synth):
    """Prefetched DALI batches (the pipeline on the producer thread, a new one per epoch)
    are the synchronous ones, across an epoch boundary; a break stops the producer."""
    import threading
    clips = find_clips(synth)
    kw = dict(size=64, batch_size=4, delta=(1, 4), seed=3, samples_per_epoch=12)  # 3 batches

    def stream(loader, n):
        out, it = [], iter(loader)
        for _ in range(n):
            b = next(it, None)
            if b is None:
                it = iter(loader)
                b = next(it)
            out.append((b, loader.state_dict()))
        return out
    sync = stream(DaliPairLoader(clips, device="cpu", prefetch=0, **kw), 5)
    fast = stream(DaliPairLoader(clips, device="cpu", prefetch=2, workers=2, **kw), 5)
    assert len(sync) == len(fast) == 5 and sync[-1][1] == {"epoch": 1, "position": 2}
    for (a, sa), (b, sb) in zip(sync, fast):
        assert sa == sb and all(torch.equal(a[k], b[k]) for k in a)
    for _ in DaliPairLoader(clips, device="cpu", prefetch=2, **kw):
        break
    for t in threading.enumerate():
        if t.name.endswith("-prefetch"):
            t.join(timeout=5)
            assert not t.is_alive()


def bad_jpeg_skipped_or_named(tmp, synth):
    """One clip of damaged JPEGs among good ones: "raise" names a damaged file, "skip" replaces
    its samples (the batch comes decoded on the CPU) and counts them; batches stay full."""
    import shutil
    clips = find_clips(synth)[:3]
    bad = os.path.join(tmp, "badclip")
    shutil.copytree(clips[0], bad)
    for name in os.listdir(bad):
        with open(os.path.join(bad, name), "r+b") as f:  # a JPEG header, then garbage
            f.seek(200)
            f.write(os.urandom(300))
            f.truncate(600)
    kw = dict(size=32, batch_size=4, seed=0, samples_per_epoch=16, device="cpu", prefetch=0)
    with pytest.raises(DataError, match="badclip"):
        list(DaliPairLoader(clips + [bad], **kw))
    loader = DaliPairLoader(clips + [bad], on_error="skip", **kw)
    batches = list(loader)
    assert len(batches) == 4 and all(b["frame_t"].shape == (4, 3, 32, 32) for b in batches)
    assert loader.report["skipped"] > 0 and "badclip" in loader.report["errors"][0]
    assert loader.data_report.counts["skipped sample"] == loader.report["skipped"]
    good = list(DaliPairLoader(clips, on_error="skip", **kw))  # no fallback without bad files
    assert len(good) == 4


def spot_frames_match(tmp):
    """``micronbert spot``'s DALI frame source (CPU decoders) yields the frames of the PyAV
    source: same count, order and pixels within codec rounding; ``spot --dali`` runs end to
    end; H.264 on the CPU and a bad file are one error naming the file."""
    from micronbert.cli import main
    from micronbert.data.dali import iter_frames_dali
    from micronbert.spot.frames import iter_frames
    rng = np.random.default_rng(0)
    t = np.arange(90)[:, None, None, None]
    base = rng.integers(0, 200, (1, 48, 64, 3))  # ~3 s at 30 fps, a drifting pattern
    frames = np.clip(base + 2 * t + rng.integers(-8, 8, (90, 48, 64, 3)), 0, 255).astype(np.uint8)
    path = os.path.join(tmp, "long.webm")
    write_video(frames, path, fps=30, codec="libvpx-vp9")
    ref = np.stack(list(iter_frames(path)))
    seqs = list(iter_frames_dali(path, sequence_length=32, device="cpu"))
    assert [len(s) for s in seqs] == [32, 32, 26]
    assert all(isinstance(s, torch.Tensor) and s.dtype == torch.uint8 and s.device.type == "cpu"
               for s in seqs)
    got = torch.cat(seqs).numpy()
    assert got.shape == ref.shape == (90, 48, 64, 3)
    diff = np.abs(got.astype(np.int16) - ref)
    assert diff.mean() < 1.0, diff.mean()
    # a frame folder: DALI's image decoder, the same frames as read_image
    from PIL import Image
    folder = os.path.join(tmp, "frames")
    os.makedirs(folder)
    for i in range(5):
        Image.fromarray(frames[i]).save(os.path.join(folder, f"img{i:03d}.png"))
    got = torch.cat(list(iter_frames_dali(folder, sequence_length=2, device="cpu"))).numpy()
    assert np.array_equal(got, np.stack(list(iter_frames(folder))))
    # the spotter on DALI's frames: end to end, the same pair scores as on PyAV's
    out = os.path.join(tmp, "spot")
    assert main(["spot", "--video", path, "--fps", "30", "--out", out, "--method", "flow",
                 "--flow-size", "48", "--dali"]) == 0
    for f in ("intervals.csv", "intervals.json", "scores.csv", "score.png", "spot.json"):
        assert os.path.isfile(os.path.join(out, f)), f
    assert main(["spot", "--video", path, "--fps", "30", "--out", out + "_pyav", "--method", "flow",
                 "--flow-size", "48"]) == 0
    a = np.loadtxt(os.path.join(out, "scores.csv"), delimiter=",", skiprows=1)
    b = np.loadtxt(os.path.join(out + "_pyav", "scores.csv"), delimiter=",", skiprows=1)
    assert a.shape == b.shape == (90, 3)
    ok = np.isfinite(b[:, 1])
    assert np.array_equal(ok, np.isfinite(a[:, 1])) and ok.sum() == 90 - 4  # k = 0.15 s = 4 frames
    assert np.corrcoef(a[ok, 1], b[ok, 1])[0, 1] > 0.9
    if not torch.cuda.is_available():
        h264 = os.path.join(tmp, "long.mp4")
        write_video(frames[:10], h264, fps=30)
        import contextlib
        import io
        err = io.StringIO()
        with contextlib.redirect_stderr(err), pytest.raises(SystemExit):
            main(["spot", "--video", h264, "--out", out + "_h264", "--method", "flow", "--dali"])
        assert re.search(r"error: .*long.mp4: h264 video.*drop --dali.*VP9", err.getvalue()), err.getvalue()
    bad = os.path.join(tmp, "broken.webm")
    with open(bad, "wb") as f:
        f.write(b"junk" * 10)
    with pytest.raises(DataError, match="broken.webm"):
        list(iter_frames_dali(bad, device="cpu"))
