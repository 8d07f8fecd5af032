"""The fused ops are PyTorch custom operators: opcheck passes, and torch.compile(fullgraph=True)
traces μ-BERT's training step and a foreign ViT using the drop-in layer, matching eager."""
import pytest
import torch

from micronbert import create_model
from micronbert.kernels import DiagonalMicroAttention, diagonal_micro_attention, random_swap_mask
from conftest import DEVICE, triton_or_skip


def _dma_args(backend, bias, gate, seed=0, null=False):
    g = torch.Generator().manual_seed(seed)
    leaf = lambda t: t.to(DEVICE).requires_grad_(True)  # noqa: E731
    q, k, v = (leaf(torch.randn(2, 3, 37, 16, generator=g)) for _ in range(3))
    b = torch.randn(2, 3, 37, generator=g) if bias else None
    if b is not None:
        b[:, :, ::5] = float("-inf")
        b = leaf(b)
    gt = leaf(torch.rand(2, 3, 37, generator=g)) if gate else None
    nl = leaf(torch.randn(2, 3, 37, generator=g)) if null else None
    return (q, k, v, b, gt, nl, 0.25, backend, 16)


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("bias,gate,null", [(False, False, False), (True, True, False),
                                            (True, False, False), (True, True, True)])
def test_opcheck_dma(backend, bias, gate, null):
    if backend == "triton":
        triton_or_skip()
    args = _dma_args(backend, bias, gate, null=null)
    torch.library.opcheck(torch.ops.micronbert.dma_fwd.default, args + (True,))
    q, k, v, b, gt, nl = args[:6]
    o, d, lse, e = torch.ops.micronbert.dma_fwd(*args, True)  # with E for the backward
    assert e.shape == (q.shape if backend == "triton" else (0,))
    bwd_args = (q.detach(), k.detach(), v.detach(), None if b is None else b.detach(),
                None if gt is None else gt.detach(), None if nl is None else nl.detach(),
                lse.detach(), d.detach(), e.detach(), torch.randn_like(o),
                torch.randn_like(d), 0.25, backend, 16)
    torch.library.opcheck(torch.ops.micronbert.dma_bwd.default, bwd_args)


def test_opcheck_swap():
    triton_or_skip()
    a = torch.randint(0, 256, (2, 3, 16, 24), dtype=torch.uint8, device=DEVICE)
    b = torch.randint(0, 256, (2, 3, 16, 24), dtype=torch.uint8, device=DEVICE)
    mask = random_swap_mask(2, (2, 3), 0.5).to(DEVICE)
    mean = torch.tensor([0.4, 0.5, 0.6], device=DEVICE)
    std = torch.tensor([0.2, 0.3, 0.25], device=DEVICE)
    for want in ((True, True), (False, False)):
        torch.library.opcheck(torch.ops.micronbert.swap_patches.default,
                              (a, b, mask, 8, mean, std, torch.float32, *want, False))


def test_compiled_dma_matches_eager():
    args = _dma_args("torch", True, True)
    fn = lambda q, k, v, b, g: diagonal_micro_attention(q, k, v, b, g, return_diag=True)  # noqa: E731
    compiled = torch.compile(fn, fullgraph=True)
    eager_out = fn(*args[:5])
    comp_out = compiled(*args[:5])
    for a, c in zip(eager_out, comp_out):
        torch.testing.assert_close(c, a, rtol=1e-5, atol=1e-6)


def _tiny_step_inputs():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 64, 64, generator=g)
    y = x + 0.1 * torch.randn(2, 3, 64, 64, generator=g)
    mask = random_swap_mask(2, 8, 0.5, torch.Generator().manual_seed(1))
    return x.to(DEVICE), y.to(DEVICE), mask.to(DEVICE)


def test_compiled_micronbert_tiny_forward_backward_matches_eager():
    torch.manual_seed(0)
    model = create_model("micronbert_tiny", poi_loss="mse", poi_mask="soft").eval().to(DEVICE)
    x, y, mask = _tiny_step_inputs()

    def step(m):
        out = m(x, y, swap_mask=mask)
        out["loss"].backward()
        return out["loss"].detach(), out["pred"].detach(), out["diag"].detach()
    eager = step(model)
    g_eager = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    compiled = step(torch.compile(model, fullgraph=True))
    for a, c in zip(eager, compiled):
        torch.testing.assert_close(c, a, rtol=1e-5, atol=1e-5)
    for n, p in model.named_parameters():
        if n in g_eager:
            torch.testing.assert_close(p.grad, g_eager[n], rtol=1e-4, atol=1e-5, msg=n)


def test_compiled_training_step_reduces_loss_like_eager():
    """On uint8 frames, as the trainer feeds them: the swap operator normalises in the graph."""
    x, y, mask = _tiny_step_inputs()
    x, y = (((f * 0.229 + 0.45) * 255).clamp(0, 255).to(torch.uint8) for f in (x, y))
    losses = {}
    for mode in ("eager", "compiled"):
        torch.manual_seed(0)
        model = create_model("micronbert_tiny", poi_loss="none").train().to(DEVICE)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        fwd = torch.compile(model, fullgraph=True) if mode == "compiled" else model
        hist = []
        for _ in range(8):
            loss = fwd(x, y, swap_mask=mask)["loss"]
            opt.zero_grad()
            loss.backward()
            opt.step()
            hist.append(loss.item())
        losses[mode] = hist
    assert losses["compiled"][-1] < 0.7 * losses["compiled"][0]
    for a, c in zip(losses["eager"], losses["compiled"]):
        assert abs(a - c) <= 1e-4 * abs(a) + 1e-5, losses


def test_compiled_foreign_vit_with_drop_in_layer():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    vit = transformers.ViTModel(transformers.ViTConfig(
        image_size=32, patch_size=8, hidden_size=48, num_hidden_layers=1, num_attention_heads=4,
        intermediate_size=96), add_pooling_layer=False).eval().to(DEVICE)
    dma = DiagonalMicroAttention(48, num_heads=4).to(DEVICE)

    def fn(a, b):
        ta, tb = vit(pixel_values=a).last_hidden_state, vit(pixel_values=b).last_hidden_state
        s = torch.softmax((tb[:, 1:] @ tb[:, :1].transpose(1, 2)).squeeze(-1), -1)
        return dma(tb[:, 1:], ta[:, 1:], ta[:, 1:], poi_scores=s)
    a, b = torch.randn(2, 3, 32, 32, device=DEVICE), torch.randn(2, 3, 32, 32, device=DEVICE)
    eager = fn(a, b)
    compiled = torch.compile(fn, fullgraph=True)(a, b)
    for e, c in zip(eager, compiled):
        torch.testing.assert_close(c, e, rtol=1e-5, atol=1e-5)
