"""End-to-end LOSO fine-tuning, its baselines and its input checks (tiny model, tiny set)."""
import json

import numpy as np
import pytest
import torch

import micronbert.recognition.finetune as ft
from micronbert import create_model
from micronbert.augment import PairAugment, pair_augment
from micronbert.baselines import baseline_features, farneback_flow, pixel_difference
from micronbert.data.annotations import load_annotations
from micronbert.data.io import DataError
from micronbert.data.synthetic import write_synthetic_dataset
from micronbert.recognition import evaluate, labelled, loso_splits, metrics, onset_apex_frames

FAST = dict(epochs=1, batch=4, warmup_epochs=0.5, head_epochs=20, progress=False)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = write_synthetic_dataset(str(tmp_path_factory.mktemp("ft") / "d"), n_subjects=3,
                                   clips_per_class=1, progress=False)
    return root, load_annotations("synthetic", root)


@pytest.fixture(scope="module")
def run(data, tmp_path_factory):
    """One fine-tuning run with baselines, every fold's training data and result recorded."""
    _, table = data
    out = tmp_path_factory.mktemp("ft") / "out"
    model = create_model("micronbert_tiny", backend="torch")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    calls, original = [], ft.train_fold

    def spy(model_, onset, apex, y, train_table, n_classes, cfg, device, log_path, subject, *a):
        rec = original(model_, onset, apex, y, train_table, n_classes, cfg, device, log_path, subject, *a)
        calls.append({"held_out": subject,
                      "subjects": set(train_table["subject"]), "n": len(onset), "rec": rec,
                      "untrained": model_ is not model})
        return rec
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ft, "train_fold", spy)
        res = ft.finetune(model, table, str(out), table.attrs["classes"], device="cpu", **FAST)
    return {"res": res, "out": out, "calls": calls, "model": model, "before": before, "table": table}


def test_finetune_changes_the_encoder_and_dma(run):
    model, before = run["model"], run["before"]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()), \
        "fine-tuning must train a copy, not the pre-trained model"
    for c in run["calls"]:
        tuned = c["rec"].model.state_dict()
        for k in ("backbone.patch_embed.proj.weight", "backbone.blocks.0.attn.qkv.weight",
                  "backbone.blocks.1.mlp.fc2.weight", "att.to_q.weight", "att.to_v.weight"):
            if not c["untrained"]:
                assert not torch.equal(tuned[k], before[k]), k


def test_held_out_subject_never_reaches_training(run):
    table = run["table"]
    everyone = set(table["subject"])
    calls = run["calls"]
    assert len(calls) == 2 * 3  # model and untrained baseline, 3 folds each
    for c in calls:
        assert c["held_out"] in everyone
        assert c["subjects"] == everyone - {c["held_out"]}
        assert c["n"] == int((table["subject"] != c["held_out"]).sum())


def test_baselines_land_in_loso_json(run):
    out = run["out"]
    res = json.loads((out / "loso.json").read_text())
    assert res == json.loads(json.dumps(run["res"]))
    assert res["mode"] == "finetune" and res["n_clips_scored"] == 12
    assert set(res["baselines"]) == {"pixel_difference", "optical_flow", "untrained"}
    for name, m in [("model", res["model"])] + list(res["baselines"].items()):
        for k in ("accuracy", "uf1", "uar"):
            assert 0.0 <= m[k] <= 1.0, (name, k)
        assert [f["subject"] for f in m["per_fold"]] == ["sub01", "sub02", "sub03"]
    for f in ("confusion.png", "loso_bars.png", "folds.csv", "fold_sub01.jsonl", "untrained/fold_sub03.jsonl"):
        assert (out / f).stat().st_size > 0, f
    lines = [json.loads(x) for x in (out / "fold_sub02.jsonl").read_text().splitlines()]
    assert lines[0]["epoch"] == 1 and np.isfinite(lines[0]["loss"]) and lines[-1]["test"]["subject"] == "sub02"


def test_freeze_is_the_probe(data, tmp_path):
    _, table = data
    model = create_model("micronbert_tiny", backend="torch")
    a = ft.finetune(model, table, str(tmp_path / "a"), table.attrs["classes"], freeze=True, baselines=False,
                    device="cpu", head_epochs=20)
    b = evaluate(model, table, str(tmp_path / "b"), table.attrs["classes"], device="cpu", baselines=False,
                 epochs=20)
    assert a["mode"] == "probe" and a == b
    assert not list((tmp_path / "a").glob("fold_*.jsonl"))


def test_one_subject_or_an_empty_class_is_a_clear_error(data, tmp_path):
    _, table = data
    one = table[table["subject"] == "sub01"]
    model = create_model("micronbert_tiny")
    for fn in (ft.finetune, evaluate):
        with pytest.raises(DataError, match="at least 2 subjects"):
            fn(model, one, str(tmp_path), table.attrs["classes"])
    with pytest.raises(DataError, match=r"classes \['extra'\] have no labelled clip"):
        labelled(table, table.attrs["classes"] + ["extra"])


def test_a_fold_whose_training_holds_one_class_is_skipped_and_reported():
    subjects = np.array(["a", "a", "b", "b", "c"])
    y = np.array([0, 1, 0, 0, 0])
    splits, skipped = loso_splits(subjects, y, 2)
    assert [s["subject"] for s in splits] == ["b", "c"]
    assert [s["subject"] for s in skipped] == ["a"] and "1 class" in skipped[0]["reason"]
    for s in splits:
        assert not s["train"][s["test"]].any()
    with pytest.raises(DataError, match="no LOSO fold"):
        loso_splits(np.array(["a", "b"]), np.array([0, 1]), 2)


def test_pair_augment_moves_both_frames_alike():
    g = torch.Generator().manual_seed(0)
    onset = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8, generator=g)
    apex = onset.clone()
    apex[:, :, 4:8, 2:5] = 255 - apex[:, :, 4:8, 2:5]  # "motion" on the left
    a, b = pair_augment(onset, apex, PairAugment(crop_scale=(1, 1), rotate=0, flip=1.0, jitter=0), g)
    assert torch.equal(a, onset.flip(-1)) and torch.equal(b, apex.flip(-1))  # a flip is exact
    a, b = pair_augment(onset, onset, PairAugment(), torch.Generator().manual_seed(1))
    assert a.dtype == torch.uint8 and torch.equal(a, b) and not torch.equal(a, onset)
    a2, _ = pair_augment(onset, onset, PairAugment(), torch.Generator().manual_seed(1))
    assert torch.equal(a, a2)  # seeded
    a, b = pair_augment(onset, apex, PairAugment(crop_scale=(1, 1), rotate=0, flip=0, jitter=0), g)
    assert torch.equal(a, onset) and torch.equal(b, apex)


def test_baseline_features_see_the_motion():
    img = torch.zeros(1, 3, 32, 32)
    img[..., 8:24, 8:24] = 200
    img = torch.nn.functional.avg_pool2d(img, 5, 1, 2).round().to(torch.uint8)
    moved = img.roll(1, -1)  # 1 px to the right
    flow = farneback_flow(img, moved)
    assert flow.shape == (1, 3, 32, 32) and flow[0, 0, 8:24, 6:26].mean() > 0.3  # u > 0
    assert pixel_difference(img, img).abs().max() == 0
    feats = baseline_features(img, moved, 8)
    assert feats["pixel_difference"].shape == (1, 16) and feats["optical_flow"].shape == (1, 48)


def test_cli_finetune_saves_fold_models(data, tmp_path):
    from micronbert.cli import main
    root, table = data
    out = tmp_path / "cli"
    assert main(["finetune", "--data", root, "--dataset", "synthetic", "--model", "micronbert_tiny",
                 "--out", str(out), "--epochs", "1", "--batch", "6", "--no-baselines", "--save-models"]) == 0
    res = json.loads((out / "loso.json").read_text())
    assert res["baselines"] == {} and res["finetune"]["aug"]["flip"] == 0.0  # synthetic: no flips
    rec, ck = ft.Recognizer.from_checkpoint(str(out / "fold_sub01.pt"))
    assert ck["subject"] == "sub01" and ck["classes"] == table.attrs["classes"]
    held = table[table["subject"] == "sub01"]
    on, ap = onset_apex_frames(held, rec.model.config.img_size)
    acc = metrics(held["label"].astype(int).values, rec.predict(on, ap, 4).numpy(), 4)["accuracy"]
    assert acc == res["model"]["per_fold"][0]["accuracy"]  # the saved model is the fold's
