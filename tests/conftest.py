"""Test setup: the test device comes from the machine.

With a usable CUDA GPU the Triton kernels are compiled and run on CUDA tensors (fp16 and
bf16 on tensor cores, as in training); without one they run on CPU tensors through
Triton's interpreter. TRITON_INTERPRET must be decided before triton is imported, hence
here, first. Setting TRITON_INTERPRET=1 yourself forces the interpreter (and CPU tensors)
even on a GPU machine.

Kernel tests put their tensors on ``DEVICE``; ``seed_of(request)`` gives a test a seed
that is the same in every process (``hash`` of a str is salted per process).
"""
import os
import zlib

import torch


def _cuda_usable() -> bool:
    if os.environ.get("TRITON_INTERPRET") == "1":
        return False
    try:
        return torch.cuda.is_available() and torch.cuda.device_count() > 0
    except Exception:  # a broken driver counts as no GPU
        return False


ON_CUDA = _cuda_usable()
if not ON_CUDA:
    os.environ["TRITON_INTERPRET"] = "1"
DEVICE = "cuda" if ON_CUDA else "cpu"

import pytest  # noqa: E402

# numpy has no bf16: the interpreter stores it as uint16, truncates fp32 -> bf16 instead of
# rounding to nearest, and the DMA kernels upcast it there before every dot (not what a GPU runs)
BF16_NEEDS_CUDA = pytest.mark.skipif(
    not ON_CUDA, reason="bf16 arithmetic is tested on CUDA only: the Triton interpreter has no "
                        "bf16 (numpy stores it as uint16; fp32 -> bf16 truncates)")


def seed_of(request) -> int:
    """A per-test seed that every process agrees on: crc32 of the test's id (and of
    ``MICRONBERT_TEST_SEED_SALT``, to rerun the tests over other seeds, e.g. a loop over salts
    0..9 to show that a tolerance holds beyond the one seed CI draws)."""
    salt = os.environ.get("MICRONBERT_TEST_SEED_SALT", "")
    return zlib.crc32((request.node.name + salt).encode())


@pytest.fixture
def seed(request):
    return seed_of(request)


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
