"""One dispatch path: eager calls and torch.compile go through the same micronbert:: operators.

The regression this guards: the kernels/ folder, installed as ``micronbert.kernels``, was once
importable as a top-level ``kernels`` whenever the repository root is on sys.path (``python -m
pytest`` from the root puts it there), and transformers imports any ``kernels`` it finds
(``is_kernels_available()``, run when a model is built). That second copy of dma.py and swap.py
registered micronbert::dma_fwd, dma_bwd and swap_patches again; torch's custom_op then destroys
the first registration, and the operator objects that micronbert.kernels calls keep a handle to
the freed dispatcher entry. Their next eager call worked or died (std::bad_alloc,
``vector::reserve``, a segfault) depending on what the allocator had put there since. The folder
now has no ``__init__.py`` (see micronbert/kernels/__init__.py): ``import kernels`` finds the PyPI
package, or at most an empty namespace, never a second copy of the ops.
"""
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from micronbert.kernels import (blockwise_swap_patches, diagonal_micro_attention, random_swap_mask,
                                triton_unavailable_reason)
from torch.utils._python_dispatch import TorchDispatchMode

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def triton_or_skip():
    why = triton_unavailable_reason(torch.empty(0))  # these tests use CPU tensors
    if why is not None:
        pytest.skip(why)


class _Ops(TorchDispatchMode):
    """Records the operators that reach the dispatcher."""

    def __init__(self):
        super().__init__()
        self.names = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(str(func))
        return func(*args, **(kwargs or {}))


def _dma_inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(2, 3, 20, 8, generator=g, requires_grad=True) for _ in range(3))
    return q, k, v, torch.rand(2, 20, generator=g), torch.randn(2, 3, 20, generator=g)


def _eager_dma_ops(backend):
    q, k, v, gate, null = _dma_inputs()
    with _Ops() as ops:
        o, d = diagonal_micro_attention(q, k, v, query_gate=gate, null_logit=null,
                                        return_diag=True, backend=backend)
        (o.square().sum() + d.sum()).backward()
    return ops.names


def test_eager_dma_calls_the_operators_torch_backend():
    names = _eager_dma_ops("torch")
    assert "micronbert.dma_fwd.default" in names and "micronbert.dma_bwd.default" in names


def test_eager_dma_calls_the_operators_triton_backend():
    triton_or_skip()
    names = _eager_dma_ops("triton")
    assert "micronbert.dma_fwd.default" in names and "micronbert.dma_bwd.default" in names


def test_eager_swap_calls_the_operator():
    triton_or_skip()
    a = torch.randint(0, 256, (2, 3, 16, 24), dtype=torch.uint8)
    mask = random_swap_mask(2, (2, 3), 0.5, torch.Generator().manual_seed(0))
    with _Ops() as ops:
        blockwise_swap_patches(a, a.flip(0), mask, 8, backend="triton")
    assert "micronbert.swap_patches.default" in ops.names


# The crash, as it happened in the suite: a test that builds a transformers model (test_compile's
# foreign ViT, test_foreign_vit) under `python -m pytest`, then eager calls of the operators
# (test_dma, test_swap). The script takes the trigger: "import" imports the folder as `kernels`
# itself, after using up the mid-size heap chunks so that the freed dispatcher entry cannot come
# back at the same address by luck (without the fix it dies every time: vector::reserve,
# std::bad_alloc or a segfault); "transformers" builds a ViT, which does that import.
_CRASH_ORDER = textwrap.dedent("""
    import ctypes, os, sys
    sys.path.insert(0, sys.argv[1])  # the repository root, as `python -m pytest` has it
    import torch
    import micronbert.kernels as mk
    from micronbert.kernels import blockwise_swap_patches, diagonal_micro_attention, dma_ref
    from micronbert.kernels import random_swap_mask, swap_patches_ref
    triton, trigger = sys.argv[2] == "1", sys.argv[3]
    if trigger == "import":
        try:
            libc = ctypes.CDLL(None)
            libc.malloc.restype = ctypes.c_void_p
            held = [libc.malloc(1100) for _ in range(20000)]
        except (OSError, AttributeError):
            pass
        import kernels
    else:
        import transformers
        transformers.ViTModel(transformers.ViTConfig(
            image_size=32, patch_size=8, hidden_size=48, num_hidden_layers=1,
            num_attention_heads=4, intermediate_size=96), add_pooling_layer=False)
        print("transformers imported kernels:", "kernels" in sys.modules)
    g = torch.Generator().manual_seed(0)
    for backend in ("torch", "triton") if triton else ("torch",):
        q, k, v = (torch.randn(2, 3, 20, 8, generator=g, requires_grad=True) for _ in range(3))
        bias, gate, null = (torch.randn(2, 3, 20, generator=g) for _ in range(3))
        o, d = diagonal_micro_attention(q, k, v, bias, gate, null_logit=null, return_diag=True,
                                        backend=backend)
        o_ref, d_ref = dma_ref(q, k, v, bias, gate, null_logit=null)
        torch.testing.assert_close(o, o_ref, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(d, d_ref, rtol=1e-4, atol=1e-5)
        grads = torch.autograd.grad(o.square().sum() + d.sum(), (q, k, v))
        grads_ref = torch.autograd.grad(o_ref.square().sum() + d_ref.sum(), (q, k, v))
        for a, b in zip(grads, grads_ref):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    if triton:
        a = torch.randint(0, 256, (2, 3, 16, 24), dtype=torch.uint8, generator=g)
        b = torch.randint(0, 256, (2, 3, 16, 24), dtype=torch.uint8, generator=g)
        mask = random_swap_mask(2, (2, 3), 0.5, g)
        mean, std = torch.tensor([0.4, 0.5, 0.6]), torch.tensor([0.2, 0.3, 0.25])
        s = blockwise_swap_patches(a, b, mask, 8, mean=mean, std=std, backend="triton")
        torch.testing.assert_close(s, swap_patches_ref(a, b, mask, 8, mean, std)[0])
    print("eager operator calls ok")
    if "kernels" in sys.modules:  # the PyPI package or an empty namespace, never these ops again
        assert sys.modules["kernels"] is not mk and "kernels.dma" not in sys.modules, sys.modules["kernels"]
        assert getattr(sys.modules["kernels"], "__file__", None) is None or (
            os.path.dirname(sys.modules["kernels"].__file__) != os.path.join(sys.argv[1], "kernels"))
    # the operator objects micronbert.kernels calls are still the registered ones
    assert mk.dma._dma_fwd_op._opoverload is torch.ops.micronbert.dma_fwd.default
    assert mk.dma._dma_bwd_op._opoverload is torch.ops.micronbert.dma_bwd.default
    assert mk.swap._swap_op._opoverload is torch.ops.micronbert.swap_patches.default
    print("one registration")
""")


def _run_crash_order(trigger):
    has_triton = "1" if triton_unavailable_reason(torch.empty(0)) is None else "0"
    cmd = [sys.executable, "-X", "faulthandler", "-c", _CRASH_ORDER, ROOT, has_triton, trigger]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)  # same TRITON_INTERPRET
    assert res.returncode == 0 and "one registration" in res.stdout, (
        f"rc={res.returncode}\n{res.stdout[-3000:]}\n{res.stderr[-6000:]}")


def test_eager_operator_calls_after_the_folder_is_imported_as_kernels():
    _run_crash_order("import")


def test_eager_operator_calls_after_transformers_builds_a_model():
    pytest.importorskip("transformers")
    _run_crash_order("transformers")
