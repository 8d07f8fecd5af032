"""Test setup: Triton kernels run on CPU tensors through the interpreter.

TRITON_INTERPRET must be set before triton is imported, hence here, first.
"""
import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

DEVICE = "cuda" if (torch.cuda.is_available() and os.environ["TRITON_INTERPRET"] != "1") else "cpu"


@pytest.fixture(autouse=True)
def _poison_outputs():
    """Fused outputs start as NaN, so a test proves every element is written."""
    try:
        from micronbert.kernels import dma_triton
    except Exception:  # triton missing: the triton tests skip themselves
        yield
        return
    dma_triton.POISON = True
    yield
    dma_triton.POISON = False


def triton_or_skip():
    try:
        import triton  # noqa: F401
    except Exception as e:
        pytest.skip(f"triton not importable: {e}")
