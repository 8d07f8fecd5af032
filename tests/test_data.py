import gc
import os
import threading
import time

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from micronbert.data.annotations import CASME2_5, MEGC2019_3, label_of, load_annotations
from micronbert.data.io import DataError, read_frames, write_video
from micronbert.data.pairs import PairLoader, find_clips
from micronbert.data.synthetic import write_synthetic_dataset


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("synth"))
    return write_synthetic_dataset(root, n_subjects=3, clips_per_class=1, progress=False)


def _folder(tmp_path, numbers, grey=False, size=(10, 12)):
    d = tmp_path / "clip"
    d.mkdir()
    for n in numbers:
        a = np.full(size if grey else size + (3,), n, dtype=np.uint8)
        Image.fromarray(a).save(d / f"img{n}.png")
    return str(d)


def test_read_frames_numeric_order_and_grey(tmp_path):
    f = read_frames(_folder(tmp_path, [10, 2, 1], grey=True))
    assert f.shape == (3, 10, 12, 3) and f.dtype == np.uint8
    assert list(f[:, 0, 0, 0]) == [1, 2, 10]


def test_read_video_round_trip(tmp_path):
    frames = np.zeros((6, 32, 48, 3), dtype=np.uint8)
    frames[:, 8:24, 8:40] = np.arange(6)[:, None, None, None] * 40
    path = str(tmp_path / "v.mp4")
    write_video(frames, path, fps=10)
    back = read_frames(path)
    assert back.shape == frames.shape
    assert np.abs(back.astype(int) - frames).mean() < 2
    assert read_frames(path, [4])[0].mean() == pytest.approx(back[4].mean())


def test_bad_inputs_name_the_file(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00" * 100)
    with pytest.raises(DataError, match="bad.mp4"):
        read_frames(str(bad))
    with pytest.raises(DataError, match="not a folder|neither"):
        read_frames(str(tmp_path / "nothing"))
    d = _folder(tmp_path, [1, 2])
    with pytest.raises(DataError, match="out of range"):
        read_frames(d, [5])
    (tmp_path / "clip" / "img3.png").write_bytes(b"broken")
    with pytest.raises(DataError, match="img3.png"):
        read_frames(d)


def test_synthetic_set_in_casme2_layout(synth):
    t = load_annotations("synthetic", synth)
    assert len(t) == 12 and t.subject.nunique() == 3 and t.label.nunique() == 4
    assert set(t.columns) >= {"subject", "clip", "path", "onset", "apex", "offset", "emotion", "label"}
    r = t.iloc[0]
    fr = read_frames(r.path, [r.onset_index, r.apex_index])
    mask = np.asarray(Image.open(os.path.join(synth, "masks", r["subject"], r["clip"] + ".png"))) > 127
    diff = np.abs(fr[1].astype(int) - fr[0]).sum(-1)
    assert diff[mask].mean() > 5 * (diff[~mask].mean() + 0.1)  # motion where the mask says
    assert (r.offset - r.onset) <= 15  # <= 0.5 s at 30 fps


def test_pretraining_corpus_moves_anywhere_where_its_masks_say(tmp_path):
    from micronbert.data import write_pretraining_corpus
    root = write_pretraining_corpus(str(tmp_path / "c"), [3, 5], clips_per_face=4, progress=False)
    clips = find_clips(root)
    assert [os.path.relpath(c, root) for c in clips[:2]] == ["face003/clip01", "face003/clip02"]
    assert len(clips) == 8
    centres = []
    for c in clips:
        fr = read_frames(c, [1, 6])  # onset and apex (0-based), as synthetic_clip places them
        rel = os.path.relpath(c, root)
        mask = np.asarray(Image.open(os.path.join(root, "masks", rel + ".png"))) > 127
        diff = np.abs(fr[1].astype(int) - fr[0]).sum(-1)
        assert mask.any() and diff[mask].mean() > 5 * (diff[~mask].mean() + 0.1)
        centres.append(np.argwhere(mask).mean(0))
    assert np.ptp(np.array(centres), axis=0).min() > 8  # not always in the same place
    with pytest.raises(ValueError, match="faces"):
        write_pretraining_corpus(str(tmp_path / "d"), [10_000], progress=False)


def test_casme2_sheet_fixes_and_errors(tmp_path):
    root = tmp_path / "casme2"
    for clip, n in (("EP02_01f", 8), ("EP03_02", 6)):
        d = root / "sub01" / clip
        d.mkdir(parents=True)
        for i in range(1, n + 1):
            Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(d / f"reg_img{i + 40}.jpg")
    rows = [dict(Subject=1, Filename="EP02_01f", OnsetFrame=41, ApexFrame="/", OffsetFrame=47,
                 **{"Action Units": "4", "Estimated Emotion": "disgust"}),
            dict(Subject=1, Filename="EP03_02", OnsetFrame=41, ApexFrame=43, OffsetFrame=0,
                 **{"Action Units": "12", "Estimated Emotion": "happiness"}),
            dict(Subject=1, Filename="EP09_09", OnsetFrame=1, ApexFrame=2, OffsetFrame=3,
                 **{"Action Units": "", "Estimated Emotion": "fear"})]
    pd.DataFrame(rows).to_excel(root / "CASME2-coding-20140508.xlsx", index=False)
    with pytest.raises(DataError, match="row 4.*EP09_09"):
        load_annotations("casme2", str(root))
    t = load_annotations("casme2", str(root), on_error="skip")
    assert len(t) == 2 and len(t.attrs["skipped"]) == 1
    assert t.apex[0] == 44 and "apex '/'" in t.fixes[0]
    assert t.offset[1] == 46 and "offset" in t.fixes[1]
    assert list(t.label) == [CASME2_5["disgust"], CASME2_5["happiness"]]


def test_class_maps():
    assert label_of("repression", "megc2019_3") == MEGC2019_3["negative"]
    assert label_of("happiness", "megc2019_3") == MEGC2019_3["positive"]
    assert label_of("others", "megc2019_3") is None
    assert label_of("sad", "casme3_4") == 1 and label_of("others", "casme3_3") is None
    assert label_of("fear", "casme2_5") is None


def test_pair_loader_deterministic_delta_sharded_resumable(synth):
    clips = find_clips(synth)
    assert len(clips) == 12 and not any("masks" in c for c in clips)
    kw = dict(size=64, batch_size=4, delta=(2, 3), seed=5, samples_per_epoch=32)
    one = list(PairLoader(clips, **kw))
    again = list(PairLoader(clips, **kw))
    assert len(one) == len(again) == 8  # 32 samples in batches of 4
    for a, b in zip(one, again):
        for k in a:
            assert torch.equal(a[k], b[k])
    loader = PairLoader(clips, **kw)
    for i in range(8):
        *_, (clip, t, d) = loader.sample(0, i)
        assert 2 <= d <= 3
    # two ranks with half the batch interleave the single-rank samples
    r0 = list(PairLoader(clips, **{**kw, "batch_size": 2}, rank=0, world_size=2))
    r1 = list(PairLoader(clips, **{**kw, "batch_size": 2}, rank=1, world_size=2))
    assert len(r0) == len(r1) == 8  # 16 samples a rank in batches of 2
    idx = sorted(torch.cat([b["index"] for b in r0 + r1]).tolist())
    assert idx == sorted(torch.cat([b["index"] for b in one]).tolist())
    f0 = {int(i): f for b in r0 for i, f in zip(b["index"], b["frame_t"])}
    f1 = {int(i): f for b in one for i, f in zip(b["index"], b["frame_t"])}
    assert all(torch.equal(f0[i], f1[i]) for i in f0)
    # resume from a position
    loader = PairLoader(clips, **kw)
    it = iter(loader)
    next(it), next(it)
    state = loader.state_dict()
    rest = list(it)
    resumed = PairLoader(clips, **kw)
    resumed.load_state_dict(state)
    again = list(resumed)
    assert len(rest) == len(again) == 6  # the 8 batches less the 2 taken before the state
    for a, b in zip(rest, again):
        assert torch.equal(a["frame_next"], b["frame_next"])


def test_pair_loader_skip_and_report(synth, tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"junk")
    clips = find_clips(synth) + [str(bad)]
    loader = PairLoader(clips, 64, 4, seed=0, samples_per_epoch=64, on_error="skip")
    batches = list(loader)
    assert len(batches) == 16  # full batches: a skipped sample is replaced
    assert loader.report["skipped"] > 0 and "broken.mp4" in loader.report["errors"][0]
    assert all(b["frame_t"].shape == (4, 3, 64, 64) for b in batches)
    with pytest.raises(DataError, match="broken.mp4"):
        list(PairLoader(clips, 64, 4, seed=0, samples_per_epoch=64))


@pytest.mark.parametrize("cache_clips", [64, 0])
def test_pair_loader_no_face_raises_or_is_skipped(tmp_path, cache_clips):
    pytest.importorskip("cv2")
    from skimage import data
    face, blank = tmp_path / "face", tmp_path / "blank"
    for d, img in ((face, data.astronaut()), (blank, np.full((256, 256, 3), 128, np.uint8))):
        d.mkdir()
        for k in range(4):
            Image.fromarray(np.roll(img, k, axis=1)).save(d / f"img{k + 1}.png")
    kw = dict(size=32, batch_size=2, seed=0, samples_per_epoch=8, cache_clips=cache_clips,
              face_cache=str(tmp_path / "boxes"))
    with pytest.raises(DataError, match="blank: no face found"):
        list(PairLoader([str(face), str(blank)], **kw))
    loader = PairLoader([str(face), str(blank)], on_error="skip", **kw)
    assert len(list(loader)) == 4
    assert loader.report["skipped"] > 0 and "no face found" in loader.report["errors"][0]



# ---------------------------------------------------------------- prefetching, decoding threads
TINY = dict(size=12, batch_size=3, patch_size=4, delta=(1, 3), seed=7, samples_per_epoch=12)  # 4 batches


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Five frame folders of six random 16 px PNG frames, and a broken video."""
    root = tmp_path_factory.mktemp("tiny")
    rng = np.random.default_rng(0)
    clips = []
    for c in range(5):
        d = root / f"clip{c}"
        d.mkdir()
        for k in range(6):
            Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(d / f"img{k + 1}.png")
        clips.append(str(d))
    (root / "broken.mp4").write_bytes(b"junk")
    return clips, str(root / "broken.mp4")


def _stream(loader, n):
    """``n`` batches drawn as ``train`` draws them (a new iterator after each epoch), each with
    the loader's state and report right after it was handed out."""
    out, it = [], iter(loader)
    for _ in range(n):
        b = next(it, None)
        if b is None:
            it = iter(loader)
            b = next(it)
        out.append((b, loader.state_dict(), {**loader.report, "errors": list(loader.report["errors"])}))
    return out


def _same_batches(xs, ys):
    assert len(xs) == len(ys)
    for (a, sa, ra), (b, sb, rb) in zip(xs, ys):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
        assert sa == sb and ra == rb


def _producers():
    return [t for t in threading.enumerate() if t.name.endswith("-prefetch") and t.is_alive()]


def _no_producer_left():
    for t in _producers():
        t.join(timeout=5)
    return not _producers()


@pytest.mark.parametrize("cache_clips, workers, prefetch", [(4, 3, 3), (0, 2, 1)])
def test_prefetch_and_workers_give_the_batches_of_the_sync_loader(tiny, cache_clips, workers, prefetch):
    clips, broken = tiny
    kw = dict(TINY, cache_clips=cache_clips, on_error="skip")
    sync = _stream(PairLoader(clips + [broken], workers=1, prefetch=0, **kw), 10)  # 2.5 epochs
    fast = _stream(PairLoader(clips + [broken], workers=workers, prefetch=prefetch, **kw), 10)
    _same_batches(sync, fast)
    assert [s for _, s, _ in sync][3:5] == [{"epoch": 0, "position": 4}, {"epoch": 1, "position": 1}]
    assert sync[-1][2]["skipped"] > 0 and "broken.mp4" in sync[-1][2]["errors"][0]
    assert _no_producer_left()


def test_clip_cache_holds_the_frames_that_two_frame_decoding_gives(tiny):
    clips, _ = tiny
    cached = list(PairLoader(clips, cache_clips=2, **TINY))  # whole clips, resized 16 -> 12 px
    direct = list(PairLoader(clips, cache_clips=0, **TINY))  # two frames per pair
    assert len(cached) == len(direct) == 4 and cached[0]["frame_t"].shape == (3, 3, 12, 12)
    for a, b in zip(cached, direct):
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_prefetch_resumes_from_what_was_handed_out(tiny):
    clips, _ = tiny
    whole = _stream(PairLoader(clips, prefetch=2, workers=2, **TINY), 9)
    loader = PairLoader(clips, prefetch=2, workers=2, **TINY)
    it = iter(loader)
    assert len([next(it) for _ in range(4)]) == 4 and next(it, None) is None  # epoch 0
    it = iter(loader)
    assert len([next(it) for _ in range(2)]) == 2
    time.sleep(0.2)  # the producer runs ahead; the state counts the batches handed out
    state = loader.state_dict()
    assert state == {"epoch": 1, "position": 2} and loader.report["samples"] == 6 * 3
    assert len(_producers()) == 1
    del it
    resumed = PairLoader(clips, prefetch=2, workers=2, **TINY)
    resumed.load_state_dict(state)
    rest = _stream(resumed, 3)
    _same_batches([(b, s, None) for b, s, _ in whole[6:]], [(b, s, None) for b, s, _ in rest])
    assert _no_producer_left()


def test_prefetch_thread_stops_on_break_gc_and_a_new_iterator(tiny):
    clips, _ = tiny
    loader = PairLoader(clips, prefetch=2, **{**TINY, "samples_per_epoch": 600})  # 200 batches
    made = []
    make = loader.make_batch
    loader.make_batch = lambda e, p: made.append(p) or make(e, p)
    for n, _ in enumerate(loader):
        time.sleep(0.1)  # the producer fills its queue
        break
    assert n == 0 and loader.state_dict() == {"epoch": 0, "position": 1}
    assert _no_producer_left() and len(made) <= 1 + 2 + 1  # handed out, queued, in the making
    it = iter(loader)
    next(it)
    assert len(_producers()) == 1
    del it, loader  # dropped mid-epoch, loader and all
    gc.collect()
    assert _no_producer_left()
    loader = PairLoader(clips, prefetch=2, **TINY)
    old = iter(loader)
    next(old)
    new = iter(loader)
    assert torch.equal(next(new)["index"], torch.arange(3, 6))  # takes over at position 1
    assert len(_producers()) == 1
    with pytest.raises(RuntimeError, match="newer iter"):
        next(old)
    del new
    assert _no_producer_left()


def test_producer_errors_reach_the_consumer(tiny, tmp_path):
    clips, _ = tiny
    bad = tmp_path / "badclip"
    bad.mkdir()
    for k in range(6):
        Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(bad / f"img{k + 1}.png")
    (bad / "img3.png").write_bytes(b"broken")  # found when decoded (no clip cache)
    with pytest.raises(DataError, match="badclip.*img3.png"):
        list(PairLoader([str(bad)], prefetch=2, cache_clips=0, **TINY))
    loader = PairLoader(clips, prefetch=3, **TINY)
    make = loader.make_batch

    def flaky(epoch, position):
        if position == 2:
            raise DataError("clip42: unreadable")
        return make(epoch, position)
    loader.make_batch = flaky
    got = []
    with pytest.raises(DataError, match="^clip42: unreadable$"):
        for b in loader:
            got.append(b)
    assert len(got) == 2 and loader.state_dict() == {"epoch": 0, "position": 2}
    assert _no_producer_left()


def test_decoding_threads_decode_a_clip_once(tiny, monkeypatch):
    from micronbert.data import pairs
    clips, _ = tiny
    calls = []

    def slow_read(path, indices=None):
        calls.append(path)
        time.sleep(0.05)
        return read_frames(path, indices)
    monkeypatch.setattr(pairs, "read_frames", slow_read)
    loader = PairLoader(clips[:1], workers=4, prefetch=0, **{**TINY, "batch_size": 4})
    batches = list(loader)
    assert len(batches) == 3 and calls == clips[:1]  # 12 samples, 4 at a time, one decoding


def test_pinned_memory_only_with_cuda(tiny):
    clips, _ = tiny
    if not torch.cuda.is_available():
        assert PairLoader(clips, **TINY).pin_memory is False
        with pytest.warns(UserWarning, match="not pinned"):
            loader = PairLoader(clips, pin_memory=True, **TINY)
        batches = list(loader)
        assert len(batches) == 4 and not batches[0]["frame_t"].is_pinned()
        return
    batches = list(PairLoader(clips, **TINY))
    assert len(batches) == 4 and all(b[k].is_pinned() for b in batches for k in b)
    batches = list(PairLoader(clips, pin_memory=False, **TINY))
    assert len(batches) == 4 and not batches[0]["frame_t"].is_pinned()


def _frames(folder, numbers, name, grey=False):
    os.makedirs(folder, exist_ok=True)
    for n in numbers:
        a = np.zeros((8, 8) if grey else (8, 8, 3), np.uint8)
        Image.fromarray(a).save(os.path.join(folder, name.format(n)))


def test_samm_adapter(tmp_path):
    root = tmp_path / "SAMM"
    _frames(root / "006" / "006_1_2", range(5562, 5570), "006_{:05d}.jpg", grey=True)
    _frames(root / "007" / "007_3_1", range(100, 106), "007_{:05d}.jpg", grey=True)
    head = pd.DataFrame([["SAMM"] + [""] * 10] * 12)  # the 13 lines above the header
    rows = pd.DataFrame([[6, "006_1_2", "x", 5562, 5566, 5569, 7, "Micro", "R12", "", "Happiness"],
                         [7, "007_3_1", "x", 100, -1, 105, 5, "Micro", "4", "", "Anger"]],
                        columns=["Subject", "Filename", "Inducement Code", "Onset Frame", "Apex Frame",
                                 "Offset Frame", "Duration", "Type", "Action Units", "Notes",
                                 "Estimated Emotion"])
    with pd.ExcelWriter(root / "SAMM_Micro_FACS_Codes_v2.xlsx") as w:
        head.to_excel(w, index=False, header=False)
        rows.to_excel(w, index=False, startrow=13)
    t = load_annotations("samm", str(root))
    assert list(t.subject) == ["006", "007"] and list(t.label) == [1, 0]  # MEGC2019 3-class
    assert t.apex[1] == 102 and "apex -1" in t.fixes[1]
    assert read_frames(t.path[0]).shape == (8, 8, 8, 3)  # grey frames -> 3 channels


def test_smic_adapter(tmp_path):
    root = tmp_path / "HS"
    _frames(root / "s1" / "micro" / "negative" / "s1_ne_01", range(10, 21), "image{:06d}.bmp")
    _frames(root / "s2" / "micro" / "surprise" / "s2_sur_01", range(5, 10), "image{:06d}.bmp")
    t = load_annotations("smic", str(root))
    assert list(t.subject) == ["s1", "s2"] and list(t.emotion) == ["negative", "surprise"]
    assert list(t.label) == [MEGC2019_3["negative"], MEGC2019_3["surprise"]]
    assert (t.onset[0], t.apex[0], t.offset[0]) == (10, 15, 20)


def test_casme3_adapter_and_class_maps(tmp_path):
    root = tmp_path / "part_A"
    _frames(root / "spNO.1" / "a" / "color", range(1, 9), "{}.jpg")
    _frames(root / "spNO.2" / "b" / "color", range(1, 9), "{}.jpg")
    df = pd.DataFrame([["spNO.1", "a", 2, 4, 7, "AU4", 1, "disgust"],
                       ["spNO.2", "b", 1, 3, 8, "AU12", 2, "happy"]],
                      columns=["Subject", "Filename", "Onset", "Apex", "Offset", "AU", "Objective class",
                               "emotion"])
    with pd.ExcelWriter(root / "cas(me)3_part_A_ME_label.xlsx") as w:
        pd.DataFrame({"x": [1]}).to_excel(w, sheet_name="readme", index=False)
        df.to_excel(w, sheet_name="label", index=False)
    assert list(load_annotations("casme3", str(root)).label) == [1, 0]
    assert list(load_annotations("casme3", str(root), "casme3_4").label) == [1, 0]
    assert list(load_annotations("casme3", str(root), "casme3_3").label) == [1, 0]


def test_face_crop_is_stable_cached_and_says_when_no_face(tmp_path):
    pytest.importorskip("cv2")
    from skimage import data

    from micronbert.data.faces import cached_face_box, clip_face_box, crop_clip
    img = data.astronaut()
    clip = np.stack([img, np.roll(img, 1, axis=1), img])  # 1 px of motion
    box = clip_face_box(clip)
    x0, y0, x1, y1 = box
    assert x1 - x0 == y1 - y0 and 150 < x0 + (x1 - x0) / 2 < 260 and 70 < y0 + (y1 - y0) / 2 < 170
    assert crop_clip(clip, box).shape[1:3] == (y1 - y0, x1 - x0)
    path = tmp_path / "clip"
    path.mkdir()
    for k, f in enumerate(clip):
        Image.fromarray(f).save(path / f"img{k + 1}.png")
    cache = tmp_path / "boxes"
    blank = np.zeros((3, 64, 64, 3), np.uint8)
    assert cached_face_box(str(path), str(cache)) == box  # decodes the clip itself
    assert len(list(cache.iterdir())) == 1
    assert cached_face_box(str(path), str(cache), frames=blank) == box  # from the cache
    Image.fromarray(img[::2, ::2]).save(path / "img1.png")  # new content: the cache is not used
    with pytest.raises(DataError, match="no face found"):
        cached_face_box(str(path), str(cache), frames=blank)
    with pytest.raises(DataError, match="no face found"):
        clip_face_box(np.zeros((2, 64, 64, 3), np.uint8), name="blank")


def _in_subprocess(check, *args):
    """DALI checks run in their own process: DALI's native libraries stay out of the test
    process, whose Triton interpreter and custom operators they have been seen to upset."""
    pytest.importorskip("nvidia.dali")
    import subprocess
    import sys
    here = os.path.dirname(os.path.abspath(__file__))
    code = f"import dali_checks; dali_checks.{check}(*{list(map(str, args))!r})"
    out = subprocess.run([sys.executable, "-c", code], cwd=here, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]


def test_dali_cpu_pipeline_matches_cpu_loader_on_jpeg_frames(synth):
    _in_subprocess("jpeg_frames_match", synth)


@pytest.mark.parametrize("codec, ext", [("mjpeg", ".avi"), ("libvpx-vp9", ".webm")])
def test_dali_cpu_pipeline_matches_cpu_loader_on_video(tmp_path, codec, ext):
    _in_subprocess("video_matches", tmp_path, codec, ext)


def test_dali_pipeline_crops_faces_as_the_cpu_loader(tmp_path):
    pytest.importorskip("cv2")
    _in_subprocess("face_crop_matches", tmp_path)


def test_dali_loader_prefetches_the_sync_batches(synth):
    _in_subprocess("prefetch_matches_sync", synth)


def test_dali_loader_bad_input(tmp_path, synth):
    _in_subprocess("bad_input", tmp_path, synth)


def test_memo_bounds_bytes_keeps_the_newest():
    """The clip cache is bounded in bytes too: least recently used values go first, and a
    value larger than the bound alone is still kept (the clip being used)."""
    from micronbert.data.pairs import Memo
    m = Memo(max_bytes=3000)
    for k in range(3):
        m.get(k, lambda: torch.zeros(1000, dtype=torch.uint8))
    m.get(0, lambda: None)  # 0 becomes the most recent
    m.get(3, lambda: torch.zeros(1000, dtype=torch.uint8))  # 4000 B: 1 (the oldest) goes
    assert list(m._done) == [2, 0, 3] and m.bytes == 3000
    m.get(4, lambda: torch.zeros(5000, dtype=torch.uint8))
    assert list(m._done) == [4] and m.bytes == 5000
    n = Memo(capacity=2, max_bytes=10 ** 6)  # the count bound still holds
    for k in range(3):
        n.get(k, lambda: torch.zeros(10, dtype=torch.uint8))
    assert list(n._done) == [1, 2]
