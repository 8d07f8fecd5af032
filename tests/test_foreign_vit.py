"""The drop-in DMA layer inside a vision transformer that is not ours: Hugging Face's ViT
(built from a config, no download; transformers installs without torchvision)."""
import pytest
import torch

from micronbert.kernels import DiagonalMicroAttention, dma_ref, swap_tokens
from conftest import DEVICE

transformers = pytest.importorskip("transformers")


class HFViTMicroMotion(torch.nn.Module):
    """An HF ViT encodes two frames; DMA between their tokens gives micro-motion."""

    def __init__(self):
        super().__init__()
        cfg = transformers.ViTConfig(image_size=32, patch_size=8, hidden_size=48, num_hidden_layers=2,
                                     num_attention_heads=4, intermediate_size=96)
        self.vit = transformers.ViTModel(cfg, add_pooling_layer=False)
        self.dma = DiagonalMicroAttention(48, num_heads=4)

    def forward(self, frame_a, frame_b, mask=None):
        ta = self.vit(pixel_values=frame_a).last_hidden_state  # B, 1+N, D
        tb = self.vit(pixel_values=frame_b).last_hidden_state
        ct, pa, pb = tb[:, 0], ta[:, 1:], tb[:, 1:]
        if mask is not None:
            pa = swap_tokens(pa, pb, mask)  # blockwise swap in token space
        scores = torch.softmax((pb @ ct.unsqueeze(-1)).squeeze(-1) / 48 ** 0.5, -1)
        return self.dma(pb, pa, pa, poi_scores=scores), (pa, pb, scores)


@pytest.mark.parametrize("backend", ["reference", "torch", "triton"])
def test_dma_in_hf_vit_forward_backward(backend):
    torch.manual_seed(0)
    m = HFViTMicroMotion().to(DEVICE)
    m.dma.backend = backend
    a, b = torch.randn(2, 3, 32, 32).to(DEVICE), torch.randn(2, 3, 32, 32).to(DEVICE)
    mask = (torch.rand(2, 16) > 0.5).to(DEVICE)
    (out, diag), (pa, pb, s) = m(a, b, mask)
    assert out.shape == (2, 16, 48) and diag.shape == (2, 4, 16)
    # the same numbers as the plain reference on the same projections
    heads = lambda lin, x: lin(x).view(2, 16, 4, 12).transpose(1, 2)  # noqa: E731
    o, d = dma_ref(heads(m.dma.to_q, pb), heads(m.dma.to_k, pa), heads(m.dma.to_v, pa),
                   None, (16 * s).unsqueeze(1).expand(2, 4, 16))
    torch.testing.assert_close(diag, d, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(out, m.dma.proj(o.transpose(1, 2).reshape(2, 16, 48)), rtol=1e-4, atol=1e-5)
    out.square().mean().backward()
    grads = [p.grad for n, p in m.vit.named_parameters() if n.endswith("weight") and p.dim() == 2]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)  # reach HF's ViT
    assert sum(g.abs().sum() for g in grads) > 0
