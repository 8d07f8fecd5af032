import os

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
    for a, b in zip(rest, list(resumed)):
        assert torch.equal(a["frame_next"], b["frame_next"])


def test_pair_loader_skip_and_report(synth, tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"junk")
    clips = find_clips(synth) + [str(bad)]
    loader = PairLoader(clips, 64, 4, seed=0, samples_per_epoch=64, on_error="skip")
    batches = list(loader)
    assert loader.report["skipped"] > 0 and "broken.mp4" in loader.report["errors"][0]
    assert all(b["frame_t"].shape == (4, 3, 64, 64) for b in batches)
    with pytest.raises(DataError, match="broken.mp4"):
        list(PairLoader(clips, 64, 4, seed=0, samples_per_epoch=64))
