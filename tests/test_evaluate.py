import numpy as np
import pytest
import torch

from micronbert import create_model
from micronbert.data.annotations import load_annotations
from micronbert.data.synthetic import write_synthetic_dataset
from micronbert.recognition import confusion, evaluate, loso, metrics


def test_metrics_agree_with_sklearn():
    from sklearn.metrics import accuracy_score, f1_score, recall_score
    rng = np.random.default_rng(0)
    for n in (2, 3, 5):
        y = rng.integers(0, n, 200)
        p = np.where(rng.random(200) < 0.6, y, rng.integers(0, n, 200))
        p[p == n - 1] = 0  # a class never predicted
        m = metrics(y, p, n)
        labels = list(range(n))
        assert m["accuracy"] == pytest.approx(accuracy_score(y, p))
        assert m["uf1"] == pytest.approx(f1_score(y, p, labels=labels, average="macro", zero_division=0))
        assert m["uar"] == pytest.approx(recall_score(y, p, labels=labels, average="macro", zero_division=0))
    assert confusion([0, 1, 1], [0, 0, 1], 2).tolist() == [[1, 0], [1, 1]]


def test_loso_holds_each_subject_out():
    g = torch.Generator().manual_seed(0)
    y = torch.arange(40) % 2
    x = torch.randn(40, 5, generator=g) + 3 * y[:, None].float()
    subjects = np.repeat(["s1", "s2", "s3", "s4"], 10)
    preds, folds = loso(x, y, subjects, 2, epochs=100)
    assert [f["subject"] for f in folds] == ["s1", "s2", "s3", "s4"]
    assert sum(f["n"] for f in folds) == 40
    assert metrics(y.numpy(), preds.numpy(), 2)["accuracy"] > 0.9


def test_evaluate_writes_results(tmp_path):
    root = write_synthetic_dataset(str(tmp_path / "d"), n_subjects=3, clips_per_class=2, progress=False)
    table = load_annotations("synthetic", root)
    torch.manual_seed(0)
    res = evaluate(create_model("micronbert_tiny"), table, str(tmp_path / "out"), table.attrs["classes"],
                   epochs=50)
    assert res["n_subjects"] == 3 and res["n_classes"] == 4 and len(res["model"]["per_fold"]) == 3
    assert res["mode"] == "probe" and res["uf1"] == res["model"]["uf1"]
    assert set(res["baselines"]) == {"pixel_difference", "optical_flow", "untrained"}
    for f in ("loso.json", "loso.md", "folds.csv", "confusion.png", "loso_bars.png"):
        assert (tmp_path / "out" / f).stat().st_size > 0


def test_probe_finds_a_planted_signal_and_nothing_in_shuffled_labels():
    """LOSO with the linear head: a class signal planted in the features is found on every
    held-out subject (UF1 1.0); the same features with shuffled labels stay near chance."""
    g = torch.Generator().manual_seed(1)
    n_cls, subjects = 3, np.repeat([f"s{i}" for i in range(6)], 12)
    y = torch.arange(len(subjects)) % n_cls
    noise = torch.randn(len(y), 4, generator=g)
    planted = 0.2 * noise  # the class, one-hot, in 3 of 4 features, under noise
    planted[:, :n_cls] += torch.nn.functional.one_hot(y, n_cls).float()
    preds, _ = loso(planted, y, subjects, n_cls, epochs=100)
    assert metrics(y.numpy(), preds.numpy(), n_cls)["uf1"] == 1.0
    shuffled = y[torch.randperm(len(y), generator=g)]
    preds, _ = loso(noise, shuffled, subjects, n_cls, epochs=100)
    assert metrics(shuffled.numpy(), preds.numpy(), n_cls)["uf1"] < 0.6  # chance 1/3
