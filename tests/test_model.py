import pytest
import torch
import torch.nn.functional as F

from conftest import DEVICE, triton_or_skip

from micronbert import MicronBERT, create_model, get_config
from micronbert.data import normalize
from micronbert.kernels import dma_ref, patchify
from micronbert.variants import balanced_diag_loss, match_target


def pair(b=2, size=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, 3, size, size, generator=g)
    return x, x + 0.1 * torch.randn(b, 3, size, size, generator=g)


def tiny(name="micronbert_tiny", **kw):
    torch.manual_seed(0)
    return create_model(name, **kw)


def test_forward_outputs_and_shapes():
    m = tiny()
    x, y = pair()
    out = m(x, y)
    n, p = m.config.num_patches, m.config.patch_size
    assert out["pred"].shape == (2, n, p * p * 3)
    assert out["diag"].shape == (2, 1, n)
    assert out["poi_scores"].shape == (2, n)
    for k in ("loss", "rec_loss", "poi_loss"):
        assert out[k].dim() == 0 and torch.isfinite(out[k])
    out["loss"].backward()
    assert m.backbone.patch_embed.proj.weight.grad is not None
    assert all(p.grad is None for p in m.teacher.parameters())  # the EMA teacher is not trained


def test_encode_and_extract_features():
    m = tiny().eval()
    x, _ = pair()
    ct, tok = m.encode(x)
    assert ct.shape == (2, 128) and tok.shape == (2, 64, 128)
    torch.testing.assert_close(m.extract_features(x), tok)
    # patch embedding as a linear map equals the authors' stride-p convolution
    conv = m.backbone.patch_embed.proj
    torch.testing.assert_close(m.backbone.patch_embed(patchify(x, 8)),
                               conv(x).flatten(2).transpose(1, 2), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("role", ["paper", "official"])
@pytest.mark.parametrize("poi", ["none", "gate", "soft", "hard"])
def test_micro_attention_roles_and_poi(role, poi):
    m = tiny(dma_role=role, poi_mask=poi).eval()
    x, y = pair()
    out, diag = m.micro_attention(x, y)
    cs, ps = m.encode(x)
    cn, pn = m.encode(y)
    q, k, v = (pn, ps, ps) if role == "paper" else (ps, pn, ps)
    att = m.att
    heads = [t(z).unsqueeze(1) for t, z in ((att.to_q, q), (att.to_k, k), (att.to_v, v))]
    s = torch.softmax((pn @ cn.unsqueeze(-1)).squeeze(-1) / 128 ** 0.5, -1)
    n = s.shape[-1]
    gate = None if poi == "none" else (n * s).unsqueeze(1)
    bias = None
    if poi == "soft":
        bias = torch.log(n * s).unsqueeze(1)
    elif poi == "hard":
        bias = torch.where(s < torch.quantile(s, 0.25, dim=-1, keepdim=True), float("-inf"), 0.0).unsqueeze(1)
    o, d = dma_ref(*heads, bias, gate)
    torch.testing.assert_close(out, att.proj(o[:, 0]), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(diag, d, rtol=1e-4, atol=1e-6)


# the matcher's DMA logits are ~300 (scale 2.34 x |q|^2 ~ 128): fp32 rounding of a logit
# (~300 x 6e-8) already moves D by ~1e-4 relative, so the two paths agree to about that
@pytest.mark.parametrize("name,tol", [("micronbert_tiny", 1e-4), ("micronbert_tiny_nullkey", 1e-3)])
@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_fused_and_reference_paths_agree(name, tol, backend):
    if backend == "triton":
        triton_or_skip()
    dev = DEVICE if backend == "triton" else "cpu"  # the kernels' device: CUDA, or the interpreter
    torch.manual_seed(0)
    ref = create_model(name, backend="reference").to(dev)
    fused = create_model(name, backend=backend).to(dev)
    fused.load_state_dict(ref.state_dict())
    x, y = (t.to(dev) for t in pair())
    mask = (torch.rand(2, 64, generator=torch.Generator().manual_seed(1)) > 0.5).to(dev)
    ref.eval(), fused.eval()
    a, b = ref(x, y, swap_mask=mask), fused(x, y, swap_mask=mask)
    for k in ("loss", "rec_loss", "diag_loss", "pred", "diag"):
        torch.testing.assert_close(a[k], b[k], rtol=tol, atol=tol / 2)
    a["loss"].backward()
    b["loss"].backward()
    for (name, pa), pb in zip(ref.named_parameters(), fused.parameters()):
        if pa.grad is not None:
            scale = pa.grad.abs().max().item()
            torch.testing.assert_close(pa.grad, pb.grad, rtol=10 * tol, atol=10 * tol * scale + 1e-6,
                                       msg=name)


def test_paper_is_the_default_and_variants_are_named():
    for name in ("micronbert_s8", "micronbert_tiny"):
        assert get_config(name).extensions() == {}, name
    ext = get_config("micronbert_tiny_nullkey").extensions()
    assert set(ext) == {"dma_scale", "dma_null_key", "dma_init", "diag_target", "diag_tol",
                        "diag_change"}
    assert "backend" not in get_config("micronbert_tiny").to_dict()
    with pytest.raises(TypeError, match="backend="):
        get_config("micronbert_tiny", fused=False)
    with pytest.raises(ValueError, match="backend must be one of"):
        create_model("micronbert_tiny", backend="fast")


@pytest.mark.parametrize("backend", ["reference", "torch", "triton"])
def test_uint8_frames_give_the_loss_and_gradients_of_normalised_frames(backend):
    """uint8 frames, NCHW or NHWC, through the swap kernel's one pass: the same loss and
    gradients as the same frames normalised beforehand."""
    if backend == "triton":
        triton_or_skip()
    dev = DEVICE if backend == "triton" else "cpu"
    g = torch.Generator().manual_seed(7)
    a, b = (torch.randint(0, 256, (3, 3, 64, 64), dtype=torch.uint8, generator=g).to(dev)
            for _ in range(2))
    mask, crop = (torch.rand(3, 64, generator=g) > 0.5).to(dev), torch.rand(3, 4, generator=g).to(dev)
    runs = []
    for x, y in ((a, b), (normalize(a), normalize(b)),
                 (a.permute(0, 2, 3, 1).contiguous(), b.permute(0, 2, 3, 1).contiguous())):
        m = tiny("micronbert_tiny", backend=backend, lambda_diag=1.0).to(dev)
        out = m(x, y, swap_mask=mask, crop_rand=crop)
        out["loss"].backward()
        runs.append((out, {k: p.grad for k, p in m.named_parameters() if p.grad is not None}))
    (o0, g0), *rest = runs
    for o, grads in rest:
        for k in ("loss", "rec_loss", "poi_loss", "diag_loss", "pred", "diag"):
            torch.testing.assert_close(o[k], o0[k], rtol=1e-5, atol=1e-6, msg=k)
        assert grads.keys() == g0.keys()
        for k in g0:
            torch.testing.assert_close(grads[k], g0[k], rtol=1e-4, atol=1e-6, msg=k)
    with pytest.raises(TypeError, match="uint8 frames or float"):
        m(a.int(), b.int())
    with pytest.raises(ValueError, match="differ"):
        m(a, normalize(b))


def test_null_key_matcher_options():
    m = tiny("micronbert_tiny_nullkey")
    assert torch.equal(m.att.to_q.weight, torch.eye(128)) and torch.equal(m.att.to_k.weight, torch.eye(128))
    assert m.att.scale == 2.34 and m.att.null_gain.shape == (1,)
    assert tiny().att.null_gain is None  # the paper's DMA has no null key
    x, _ = pair()
    _, d_same = m.micro_attention(x, x)  # identical frames: every patch matches itself
    assert d_same.min() > 0.9
    y = x.clone()
    y[:, :, 8:16, 16:24] = torch.randn(2, 3, 8, 8)  # patch 10 changes
    _, d = m.micro_attention(x, y)
    assert d[:, 0, 10].max() < 0.1
    out = m(x, y, swap_mask=torch.zeros(2, 64, dtype=torch.bool))
    out["diag_loss"].backward()
    assert m.att.null_gain.grad.abs().item() > 0  # the null key learns
    with pytest.raises(ValueError, match="dma_init"):
        get_config("micronbert_tiny", dma_init="orthogonal")
    with pytest.raises(ValueError, match="diag_change"):
        get_config("micronbert_tiny", diag_tol=0.05, diag_change=0.01)


def test_match_target_band_is_left_out_of_the_loss():
    m = tiny(poi_loss="none", lambda_diag=1.0, diag_target="match", diag_tol=0.01, diag_change=0.05)
    x, _ = pair(b=1, seed=2)
    y = x.clone()
    y[:, :, 0:8, 0:8] += 0.005  # patch 0: unchanged (<= diag_tol)
    y[:, :, 0:8, 8:16] += 0.03  # patch 1: in the band, left out
    y[:, :, 0:8, 16:24] += 0.1  # patch 2: changed (> diag_change)
    y[:, :, 0:8, 24:32] += 0.03  # patch 3: in the band but swapped: matches
    swap = torch.zeros(1, 64, dtype=torch.bool)
    swap[0, 3] = True
    a, b = patchify(x, 8), patchify(y, 8)
    want = match_target(swap, torch.where(swap.unsqueeze(-1), b, a), b, 0.01, 0.05)
    assert want[0, :4].tolist() == [1.0, -1.0, 0.0, 1.0] and (want[0, 4:] == 1).all()
    diag = torch.rand(1, 1, 64)
    moved = diag.clone()
    moved[0, 0, 1] = 1 - moved[0, 0, 1]  # D of the left-out patch does not matter
    assert balanced_diag_loss(diag, want) == balanced_diag_loss(moved, want)
    # the model's diag loss is that loss, with its config's band (diag_tol, diag_change)
    assert m.diag_loss(diag, swap, torch.where(swap.unsqueeze(-1), b, a), b) == balanced_diag_loss(diag, want)


def test_reconstruction_loss_targets_frame_t_patches():
    m = tiny(poi_loss="none").eval()
    x, y = pair()
    out = m(x, y)
    torch.testing.assert_close(out["rec_loss"], F.mse_loss(out["pred"], patchify(x, 8)))
    m.config.norm_pix_loss = True
    t = patchify(x, 8)
    t = (t - t.mean(-1, keepdim=True)) / (t.var(-1, keepdim=True) + 1e-6) ** 0.5
    out = m(x, y, swap_mask=out["swap_mask"])
    torch.testing.assert_close(out["rec_loss"], F.mse_loss(out["pred"], t))


def test_swap_mask_is_applied():
    """With every patch swapped, the swapped frame is I_{t+d}: DMA's keys equal its queries."""
    m = tiny(poi_loss="none", poi_mask="none").eval()
    x, y = pair()
    out = m(x, y, swap_mask=torch.ones(2, 64, dtype=torch.bool))
    _, diag = m.micro_attention(y, y)
    torch.testing.assert_close(out["diag"], diag, rtol=1e-5, atol=1e-6)


def test_total_loss_and_diag_loss():
    m = tiny(lambda_poi=0.5, lambda_diag=2.0)
    x, y = pair()
    out = m(x, y, generator=torch.Generator().manual_seed(0))
    dg = F.smooth_l1_loss(out["diag"], out["swap_mask"].float().unsqueeze(1))
    torch.testing.assert_close(out["diag_loss"], dg)
    torch.testing.assert_close(out["loss"], out["rec_loss"] + 0.5 * out["poi_loss"] + 2.0 * dg)


def test_match_diag_target_and_balanced_loss():
    """'match': 1 where the key patch shows what the query patch shows (swapped, or unchanged
    between the frames), 0 where the frames differ; the two classes weigh the same."""
    m = tiny(poi_loss="none", lambda_diag=1.0, diag_target="match", diag_tol=0.02)
    x, _ = pair(b=3, seed=1)
    y = x.clone()
    y[:, :, 8:16, 16:24] += 0.5  # patch (1, 2) changes: index 1 * 8 + 2 = 10
    y[2, :, 40:48, 0:8] += 0.01  # below the tolerance: counts as unchanged
    swap = torch.zeros(3, 64, dtype=torch.bool)
    swap[1, 10] = True  # swapped: the key patch is I_{t+d}'s own
    out = m(x, y, swap_mask=swap)
    want = torch.ones(3, 64)
    want[[0, 2], 10] = 0
    a, b = (patchify(f, 8) for f in (x, y))
    sw = torch.where(swap.unsqueeze(-1), b, a)
    torch.testing.assert_close(match_target(swap, sw, b, 0.02), want)
    err = F.smooth_l1_loss(out["diag"][:, 0], want, reduction="none")
    expect = (err[want == 0].mean() + err[want == 1].mean()) / 2
    torch.testing.assert_close(out["diag_loss"], expect)
    m.zero_grad()
    out["diag_loss"].backward()
    assert m.att.to_q.weight.grad.abs().sum() > 0
    # one class only (nothing changed): the mean over it
    out = m(x, x, swap_mask=swap)
    torch.testing.assert_close(out["diag_loss"], F.smooth_l1_loss(out["diag"][:, 0], torch.ones(3, 64)))


def test_dino_loss_is_cross_entropy_with_centring():
    m = tiny()
    s, t = torch.randn(4, 64), torch.randn(4, 64)
    m.dino_loss_fn.center.fill_(0.3)
    m.dino_loss_fn.eval()
    pt = torch.softmax((t - 0.3) / m.config.teacher_temp, -1)
    ref = (-pt * torch.log_softmax(s / m.config.student_temp, -1)).sum(-1).mean()
    torch.testing.assert_close(m.dino_loss_fn(s, t), ref)
    m.dino_loss_fn.train()
    m.dino_loss_fn(s, t)
    torch.testing.assert_close(m.dino_loss_fn.center, 0.9 * 0.3 + 0.1 * t.mean(0, keepdim=True))


def test_mse_poi_loss_guards_against_collapse():
    m = tiny(poi_loss="mse")
    ct = torch.randn(8, 128)
    collapsed = torch.zeros(8, 128)
    assert m.poi_loss(None, collapsed, collapsed) > 0.9  # identical but constant: penalised
    spread = ct * 3
    assert m.poi_loss(None, spread, spread) < 1e-2  # identical and spread: ~0


def test_ema_teacher_update():
    m = tiny()
    with torch.no_grad():
        for p in m.backbone.parameters():
            p.add_(1.0)
    before = m.teacher.backbone.norm.bias.clone()
    m.update_teacher(0.9)
    torch.testing.assert_close(m.teacher.backbone.norm.bias,
                               0.9 * before + 0.1 * m.backbone.norm.bias)


def test_micro_motion_map_range_and_shape():
    m = tiny().eval()
    x, y = pair(3)
    mm = m.micro_motion_map(x, y)
    assert mm.shape == (3, 64, 64) and mm.min() >= 0 and mm.max() <= 1


def test_bad_inputs_name_the_problem():
    m = tiny()
    x, y = pair()
    with pytest.raises(ValueError, match="pixels"):
        m(x[..., :32, :32], y[..., :32, :32])
    with pytest.raises(ValueError, match="channels"):
        m(x[:, :1], y[:, :1])
    with pytest.raises(ValueError, match="torch.uint8 and frame_next .* torch.float32 differ"):
        m((x * 10).to(torch.uint8), y)
    with pytest.raises(TypeError, match="uint8 frames or float"):
        m(x.long(), y.long())
    with pytest.raises(ValueError, match="must be normalised"):
        m(x * 0 + 200.0, y)
    with pytest.raises(ValueError, match="differ"):
        m(x, y[:1])
    with pytest.raises(ValueError, match="swap_mask"):
        m(x, y, swap_mask=torch.ones(2, 10, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        m.encode(x[0])
    with pytest.raises(ValueError, match="unknown model"):
        create_model("micronbert_xl")
    with pytest.raises(TypeError, match="unknown config"):
        get_config("micronbert_tiny", heads=3)
    with pytest.raises(ValueError, match="dma_role"):
        get_config("micronbert_tiny", dma_role="other")


def test_non_square_images():
    m = MicronBERT(get_config("micronbert_tiny", img_size=(48, 64)))
    x = torch.randn(2, 3, 48, 64)
    out = m(x, x + 0.1)
    assert out["pred"].shape == (2, 48, 192)
    assert m.micro_motion_map(x, x).shape == (2, 48, 64)


@pytest.mark.parametrize("backend,bf16", [("reference", False), ("torch", False), ("auto", True)])
def test_cls_only_pass_gives_the_full_pass_ct_and_its_gradients(backend, bf16, seed):
    """Encoder(cls_only=True), which computes only the CT's row in the last block, returns
    the full pass's CT with the same gradients, at an odd batch and grid: on the reference
    route, SDPA (fp32) and the "explicit" route ("auto" in bf16 training on a CPU)."""
    from contextlib import nullcontext

    from micronbert.kernels.backend import precision
    torch.manual_seed(seed % 1000)
    model = create_model("micronbert_tiny", backend=backend, img_size=(40, 56))
    enc, c = model.backbone, model.config
    p = torch.randn(3, c.num_patches, c.patch_size ** 2 * 3, generator=torch.Generator().manual_seed(seed))
    w = torch.randn(3, 1, c.embed_dim, generator=torch.Generator().manual_seed(seed + 1))
    outs = []
    for cls_only in (False, True):
        enc.zero_grad(set_to_none=True)
        x = p.clone().requires_grad_(True)
        with precision("cpu", "bf16") if bf16 else nullcontext():
            ct = enc(x, cls_only=cls_only)[:, :1]
        (ct.float() * w).sum().backward()
        outs.append([ct, x.grad] + [q.grad for q in enc.parameters()])
    assert enc(p, cls_only=True).shape == (3, 1, c.embed_dim)
    tol = 2e-2 if bf16 else 1e-4  # SDPA: another kernel for 1 query; bf16: its rounding
    for full, only in zip(*outs):
        torch.testing.assert_close(only.float(), full.float(), rtol=tol, atol=tol * full.abs().max().item())


def test_training_step_with_cls_only_passes_equals_full_passes(monkeypatch, seed):
    """The PoI crop and the DINO teacher are encoded CT-only: the loss and every gradient of a
    training step equal those of full encoder passes sliced to the CT."""
    import micronbert.model as M

    def step(model):
        model.zero_grad(set_to_none=True)
        a, b = pair(2, seed=seed)
        mask = torch.rand(2, model.config.num_patches, generator=torch.Generator().manual_seed(seed)) < 0.5
        out = model(a, b, swap_mask=mask, generator=torch.Generator().manual_seed(seed))
        out["loss"].backward()
        return [out["loss"], out["poi_loss"]] + [p.grad for p in model.parameters() if p.grad is not None]

    fast = step(tiny().train())
    full_pass = M.Encoder.forward
    monkeypatch.setattr(M.Encoder, "forward", lambda self, p, cls_only=False: full_pass(self, p)[:, :1]
                        if cls_only else full_pass(self, p))
    slow = step(tiny().train())
    assert fast[1] > 0 and len(fast) == len(slow)
    for f, s in zip(fast, slow):  # fp32 sums in another order: relative to each tensor's scale
        torch.testing.assert_close(f, s, rtol=1e-4, atol=1e-5 * s.abs().max().item())
