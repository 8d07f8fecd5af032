import pytest
import torch

from micronbert import create_model, load_checkpoint, load_official_checkpoint, save_checkpoint
from micronbert.checkpoint import CheckpointError

import authors_ref as A


@pytest.mark.parametrize("diag_att", [False, True])
@pytest.mark.parametrize("prefix,dino", [("module.", True), ("", False), ("module.", False)])
def test_loaded_model_computes_what_their_code_computes(tmp_path, diag_att, prefix, dino):
    sd = A.make_authors_state_dict(dino=dino, seed=int(diag_att))
    path = tmp_path / "ckpt.pth"
    A.save_authors_checkpoint(path, sd, diag_att, prefix=prefix)
    model = load_official_checkpoint(str(path))
    assert model.config.dma_role == "official" and model.config.diag_att == diag_att
    g = torch.Generator().manual_seed(7)
    x, x_ref = torch.randn(2, 3, 32, 32, generator=g), torch.randn(2, 3, 32, 32, generator=g)
    torch.testing.assert_close(model.extract_features(x), A.extract_features(sd, x),
                               rtol=1e-4, atol=1e-5)
    out, diag = model.micro_attention(frame_swapped=x, frame_next=x_ref)
    ref_out, ref_diag = A.cross_attention(sd, A.extract_features(sd, x), A.extract_features(sd, x_ref),
                                          diag_att)
    torch.testing.assert_close(out, ref_out, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(diag[:, 0], ref_diag, rtol=1e-4, atol=1e-6)
    if dino:
        torch.testing.assert_close(model.dino_loss_fn.center, sd["dino_loss_fn.center"])
        torch.testing.assert_close(model.teacher.head.last_layer.weight_v,
                                   sd["teacher.head.last_layer.weight_v"])


def test_reference_and_fused_paths_agree_on_official_weights(tmp_path):
    sd = A.make_authors_state_dict(dino=False)
    A.save_authors_checkpoint(tmp_path / "c.pth", sd, True)
    fused = load_official_checkpoint(str(tmp_path / "c.pth"), backend="torch")
    ref = load_official_checkpoint(str(tmp_path / "c.pth"), backend="reference")
    x, y = torch.randn(2, 3, 32, 32), torch.randn(2, 3, 32, 32)
    for a, b in zip(fused.micro_attention(x, y), ref.micro_attention(x, y)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_s8_parameter_count_equals_authors_architecture():
    """mae_vit_small_patch8 (has_decoder, no DINO, no aux head), counted by hand."""
    d, p, c, depth, dd, ddepth, mlp = 512, 8, 3, 4, 512, 4, 4

    def block(w):
        return 2 * w + (3 * w * w + 3 * w) + (w * w + w) + 2 * w + (mlp * w * w + mlp * w) + (mlp * w * w + w)
    n = (224 // p) ** 2
    encoder = (d * c * p * p + d) + d + (n + 1) * d + depth * block(d) + 2 * d
    dma = 4 * (d * d + d)
    decoder = (d * dd + dd) + (n + 1) * dd + ddepth * block(dd) + 2 * dd + (dd * p * p * c + p * p * c)
    model = create_model("micronbert_s8", poi_loss="none")
    ours = sum(p.numel() for p in model.parameters()) + model.backbone.pos_embed.numel() \
        + model.decoder_pos_embed.numel()  # theirs are frozen Parameters, ours buffers
    assert ours == encoder + dma + decoder == 26732224 + 2 * (n + 1) * 512


def test_s8_loads_authors_s8_shapes(tmp_path):
    sd = A.make_authors_state_dict(img=224, d=512, depth=4, dec_d=512, dec_depth=4, dino=False)
    A.save_authors_checkpoint(tmp_path / "s8.pth", sd, False, img=224)
    m = load_official_checkpoint(str(tmp_path / "s8.pth"))
    ref = create_model("micronbert_s8", poi_loss="none", dma_role="official", diag_att=False,
                       poi_mask="none").config
    for f in ("img_size", "patch_size", "embed_dim", "depth", "num_heads", "decoder_embed_dim",
              "decoder_depth", "decoder_num_heads", "mlp_ratio"):
        assert getattr(m.config, f) == getattr(ref, f), f


def _save_variant(tmp_path, edit):
    sd = A.make_authors_state_dict(dino=False)
    edit(sd)
    A.save_authors_checkpoint(tmp_path / "bad.pth", sd, True)
    return str(tmp_path / "bad.pth")


def test_missing_unexpected_misshaped_keys_are_named(tmp_path):
    with pytest.raises(CheckpointError, match=r"missing keys \['att.proj.bias'\]"):
        load_official_checkpoint(_save_variant(tmp_path, lambda sd: sd.pop("att.proj.bias")))
    with pytest.raises(CheckpointError, match=r"unexpected keys \['extra.weight'\]"):
        load_official_checkpoint(_save_variant(tmp_path, lambda sd: sd.update({"extra.weight": torch.ones(1)})))
    with pytest.raises(CheckpointError, match=r"mis-shaped keys.*decoder_pred.bias"):
        load_official_checkpoint(_save_variant(
            tmp_path, lambda sd: sd.update({"decoder_pred.bias": torch.ones(5)})))


def test_files_that_are_not_checkpoints(tmp_path):
    (tmp_path / "junk.pth").write_bytes(b"not a torch file at all")
    with pytest.raises(CheckpointError, match="not a loadable checkpoint"):
        load_official_checkpoint(str(tmp_path / "junk.pth"))
    torch.save(torch.ones(3), tmp_path / "tensor.pth")
    with pytest.raises(CheckpointError, match="expected a dict with a 'model'"):
        load_official_checkpoint(str(tmp_path / "tensor.pth"))
    torch.save({"model": {"foo": torch.ones(1)}}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="not a Micron-BERT state dict"):
        load_official_checkpoint(str(tmp_path / "other.pth"))
    with pytest.raises(FileNotFoundError):
        load_official_checkpoint(str(tmp_path / "nope.pth"))


class Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_arbitrary_pickled_code_is_refused(tmp_path, capsys):
    torch.save({"model": {}, "args": Payload()}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match="could run code"):
        load_official_checkpoint(str(tmp_path / "evil.pth"))
    assert "never run" not in capsys.readouterr().out


@pytest.mark.parametrize("kw", [{}, {"dma_null_key": True, "dma_init": "identity", "dma_scale": 2.0}])
def test_our_checkpoints_round_trip_atomically(tmp_path, kw):
    m = create_model("micronbert_tiny", **kw)
    if kw:
        m.att.null_gain.data.fill_(0.7)
    path = tmp_path / "sub" / "m.pt"
    save_checkpoint(str(path), m, step=3)
    assert [p.name for p in path.parent.iterdir()] == ["m.pt"]  # no temporary left behind
    m2, ck = load_checkpoint(str(path))
    assert ck["step"] == 3 and m2.config == m.config
    for (k, a), b in zip(m.state_dict().items(), m2.state_dict().values()):
        assert torch.equal(a, b), k
    with pytest.raises(CheckpointError, match="load_official_checkpoint"):
        A.save_authors_checkpoint(tmp_path / "a.pth", A.make_authors_state_dict(dino=False), True)
        load_checkpoint(str(tmp_path / "a.pth"))


# ------------------------------------------------------------------ issue 24: checked before built
@pytest.fixture
def no_real_build(monkeypatch):
    """MicronBERT may be built on the meta device only (a build elsewhere fails the test)."""
    import micronbert.checkpoint as C
    real = C.MicronBERT

    def guarded(cfg, backend="auto"):
        if torch.empty(0).device.type != "meta":
            raise AssertionError(f"a model (embed_dim {cfg.embed_dim}, depth {cfg.depth}) was "
                                 f"built before the file's tensors were checked")
        return real(cfg, backend=backend)
    monkeypatch.setattr(C, "MicronBERT", guarded)


def _small_file_big_config(path, **conf):
    cfg = create_model("micronbert_tiny").config.to_dict() | conf
    torch.save({"format": "micronbert-fused/1", "config": cfg,
                "model": {"backbone.cls_token": torch.zeros(1, 1, 8)}}, path)
    return str(path)


def test_small_file_with_a_large_config_is_refused_before_building(tmp_path, no_real_build):
    from micronbert.checkpoint import load_model
    path = _small_file_big_config(tmp_path / "small.pt", embed_dim=2048, depth=8,
                                  decoder_embed_dim=2048)
    assert (tmp_path / "small.pt").stat().st_size < 4096
    for load in (load_checkpoint, load_model):
        with pytest.raises(CheckpointError, match=r"do not match its config.*missing keys") as e:
            load(path)
        assert "\n" not in str(e.value) and len(str(e.value)) < 600
    huge = _small_file_big_config(tmp_path / "huge.pt", depth=10 ** 6)
    with pytest.raises(CheckpointError, match=r"depth 1000000, above the bound"):
        load_checkpoint(huge)
    wide = _small_file_big_config(tmp_path / "wide.pt", img_size=4000, patch_size=8)
    with pytest.raises(CheckpointError, match=r"patches of width"):
        load_checkpoint(wide)
    # the authors' format: config from the shapes, the same check before the build
    sd = A.make_authors_state_dict(dino=False)
    sd["backbone.blocks.0.attn.qkv.weight"] = torch.zeros(3, 3)
    A.save_authors_checkpoint(tmp_path / "a.pth", sd, True)
    with pytest.raises(CheckpointError, match=r"mis-shaped keys.*blocks.0.attn.qkv.weight"):
        load_official_checkpoint(str(tmp_path / "a.pth"))


def test_good_checkpoints_still_load_after_the_meta_check(tmp_path):
    m = create_model("micronbert_tiny")
    save_checkpoint(str(tmp_path / "m.pt"), m)
    m2, _ = load_checkpoint(str(tmp_path / "m.pt"))
    assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), m2.state_dict().values()))
    assert all(p.device.type == "cpu" for p in m2.parameters())


def test_recognizer_from_a_pretraining_checkpoint_is_a_clear_error(tmp_path):
    from micronbert.finetune import Recognizer
    save_checkpoint(str(tmp_path / "pre.pt"), create_model("micronbert_tiny"), step=3)
    with pytest.raises(CheckpointError, match=r"pre.pt: not a fine-tuned fold model.*--save-models"):
        Recognizer.from_checkpoint(str(tmp_path / "pre.pt"))


def test_refusal_of_pickled_code_is_short_and_gives_no_unsafe_advice(tmp_path):
    torch.save({"model": {}, "args": Payload()}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(str(tmp_path / "evil.pth"))
    msg = str(e.value)
    assert "could run code" in msg and "(print)" in msg and len(msg) < 250 and "\n" not in msg
    assert "weights_only=False" not in msg and "False" not in msg and "trust" not in msg
