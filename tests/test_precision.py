"""Precision chosen once (kernels.backend.resolve_precision, --precision on every model
command), bf16 autocast on the CPU correct for the whole model (forward and a training
step's grads within 2x of the same-dtype PyTorch error against fp64), and a short
pre-training run in bf16 that follows the fp32 one from the same seed."""
import pytest
import torch

from micronbert import create_model
from micronbert.cli.commands import asked_precision
from micronbert.cli.parser import build_parser
from micronbert.kernels.backend import PRECISIONS, cpu_has_native_bf16, precision, resolve_precision
from micronbert.kernels import dma as dma_ops, random_swap_mask, swap as swap_ops
from micronbert.train import make_optimizer


def test_resolve_precision_and_its_aliases():
    assert resolve_precision("fp32", "cpu") == "fp32" and resolve_precision("bf16", "cpu") == "bf16"
    assert resolve_precision("auto", "cpu") == ("bf16" if cpu_has_native_bf16() else "fp32")
    assert resolve_precision("auto", "cuda") == "bf16"
    assert resolve_precision(False, "cuda") == "fp32" and resolve_precision(True, "cuda") == "bf16"
    with pytest.raises(ValueError, match="precision must be one of"):
        resolve_precision("fp16", "cpu")
    with precision("cpu", "bf16"):
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
    with precision("cpu", "fp32"):
        assert not torch.is_autocast_enabled("cpu")


def test_every_model_command_has_precision_and_no_bf16_means_fp32():
    parser, subs, _ = build_parser()
    for cmd in ("pretrain", "finetune", "evaluate", "visualize", "spot", "demo"):
        action = next(a for a in subs[cmd]._actions if a.dest == "precision")
        assert tuple(action.choices) == PRECISIONS and action.default == "auto", cmd
    args = parser.parse_args(["pretrain", "--data", "d", "--out", "o", "--no-bf16", "--precision", "bf16"])
    assert asked_precision(args) == "fp32"
    args = parser.parse_args(["finetune", "--data", "d", "--out", "o", "--precision", "bf16"])
    assert asked_precision(args) == "bf16"


@pytest.fixture
def fp64_frames(monkeypatch):
    """The reference swap and DMA (plain PyTorch) take fp64 too, for the fp64 model."""
    monkeypatch.setattr(swap_ops, "_FRAME_DTYPES", swap_ops._FRAME_DTYPES + (torch.float64,))
    monkeypatch.setattr(dma_ops, "_DTYPES", dma_ops._DTYPES + (torch.float64,))


def _pair(cfg, b, seed):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(b, 3, *cfg.img_size, generator=g)
    return a, a + 0.1 * torch.randn(a.shape, generator=g)  # normalised frames, small motion


def _err(x, ref):
    return (x.double() - ref).norm().item() / ref.norm().item()


@pytest.mark.parametrize("backend", ["auto", "torch"])
def test_model_forward_in_cpu_bf16_within_2x_of_pytorch_bf16(backend, seed, fp64_frames):
    """micro_attention (DMA out and diagonal) of the model's CPU path under bf16 autocast:
    error against the fp64 model at most 2x that of the plain PyTorch reference path in bf16."""
    torch.manual_seed(seed % 1000)
    ref64 = create_model("micronbert_tiny", backend="reference").eval()
    ours = create_model("micronbert_tiny", backend=backend).eval()
    ours.load_state_dict(ref64.state_dict())
    plain = create_model("micronbert_tiny", backend="reference").eval()
    plain.load_state_dict(ref64.state_dict())
    a, b = _pair(ref64.config, 3, seed)
    with torch.no_grad():
        want = [t.double() for t in ref64.double().micro_attention(a.double(), b.double())]
        with precision("cpu", "bf16"):
            got = ours.micro_attention(a, b)
            base = plain.micro_attention(a, b)
    assert got[0].dtype == torch.bfloat16  # autocast did run in bf16
    for g, p, w, name in zip(got, base, want, ("out", "diag")):
        assert torch.isfinite(g.float()).all()
        assert _err(g, w) <= 2 * _err(p, w) + 1e-6, (name, _err(g, w), _err(p, w))


def _grads(model, a, b, mask, dtype_ctx):
    model.zero_grad(set_to_none=True)
    with dtype_ctx:
        loss = model(a, b, swap_mask=mask, generator=torch.Generator().manual_seed(1))["loss"]
    loss.backward()
    return torch.cat([p.grad.double().flatten() for p in model.parameters() if p.grad is not None])


def test_training_step_grads_in_cpu_bf16_within_2x_of_pytorch_bf16(seed, fp64_frames):
    torch.manual_seed(seed % 1000)
    ref64 = create_model("micronbert_tiny", backend="reference").train()
    ours = create_model("micronbert_tiny", backend="auto").train()
    plain = create_model("micronbert_tiny", backend="reference").train()
    for m in (ours, plain):
        m.load_state_dict(ref64.state_dict())
    a, b = _pair(ref64.config, 2, seed)
    mask = random_swap_mask(2, ref64.config.grid, 0.5, generator=torch.Generator().manual_seed(seed))
    want = _grads(ref64.double(), a.double(), b.double(), mask, torch.autocast("cpu", enabled=False))
    got = _grads(ours, a, b, mask, precision("cpu", "bf16"))
    base = _grads(plain, a, b, mask, precision("cpu", "bf16"))
    assert torch.isfinite(got).all() and _err(got, want) < 0.2  # bf16: a few per cent
    assert _err(got, want) <= 2 * _err(base, want) + 1e-6, (_err(got, want), _err(base, want))


def _run(which, steps=6, seed=0):
    torch.manual_seed(seed)
    model = create_model("micronbert_tiny").train()
    opt = make_optimizer(model, 1e-3)
    g = torch.Generator().manual_seed(seed)
    frames = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8, generator=g)
    later = (frames.int() + torch.randint(-8, 9, frames.shape, generator=g)).clamp(0, 255).to(torch.uint8)
    losses = []
    for step in range(steps):
        mask = random_swap_mask(2, model.config.grid, 0.5, generator=torch.Generator().manual_seed(step))
        with precision("cpu", which):
            loss = model(frames, later, swap_mask=mask, generator=torch.Generator().manual_seed(step))["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        model.update_teacher(0.996)
        losses.append(loss.item())
    assert all(p.dtype == torch.float32 for p in model.parameters())  # weights stay fp32
    return torch.tensor(losses)


def test_short_pretraining_in_bf16_follows_fp32():
    """6 steps of micronbert_tiny from one seed: every bf16 loss within 5 % of the fp32 one
    (bf16 rounds at 2^-8 = 0.4 %; the runs drift apart through the updates), and the loss
    falls alike in both."""
    fp32, bf16 = _run("fp32"), _run("bf16")
    assert ((bf16 - fp32).abs() / fp32.abs()).max() < 0.05, (fp32, bf16)
    assert fp32[-3:].mean() < fp32[:3].mean() and bf16[-3:].mean() < bf16[:3].mean()


@pytest.mark.parametrize("b,n,dim,heads", [(3, 37, 48, 4), (1, 65, 96, 3)])
def test_explicit_attention_in_cpu_bf16_within_2x_of_the_authors_form(b, n, dim, heads, seed):
    """The "explicit" route ("auto" in bf16 training on a CPU: the scale on Q, not on the
    N x N scores) against the authors' form in bf16, both against fp64: the output and the
    gradients of the input and of every weight, at odd shapes."""
    from micronbert.kernels.backend import attention_route
    from micronbert.model import Attention
    torch.manual_seed(seed % 1000)
    ours, plain = Attention(dim, heads, "auto"), Attention(dim, heads, "reference")
    plain.load_state_dict(ours.state_dict())
    ref64 = Attention(dim, heads, "reference").double()
    ref64.load_state_dict(ours.state_dict())
    x = torch.randn(b, n, dim, generator=torch.Generator().manual_seed(seed))
    g = torch.randn(b, n, dim, generator=torch.Generator().manual_seed(seed + 1))
    assert attention_route("auto", torch.zeros(1, dtype=torch.bfloat16, requires_grad=True)) == "explicit"

    def run(module, inp, ctx):
        inp = inp.clone().requires_grad_(True)
        with ctx:
            out = module(inp)
        out.backward(g.to(out.dtype))
        grads = [inp.grad] + [p.grad for p in module.parameters()]
        return [out] + grads

    want = run(ref64, x.double(), torch.autocast("cpu", enabled=False))
    got = run(ours, x, precision("cpu", "bf16"))
    base = run(plain, x, precision("cpu", "bf16"))
    assert got[0].dtype == torch.bfloat16
    for i, (o, p, w) in enumerate(zip(got, base, want)):
        assert torch.isfinite(o.float()).all()
        assert _err(o, w) <= 2 * _err(p, w) + 1e-6, (i, _err(o, w), _err(p, w))
