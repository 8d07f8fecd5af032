"""The project installs and imports beside the PyPI ``kernels`` package (which transformers ≥ 5
requires), whatever the working directory.

The repository keeps its fused ops in a top-level ``kernels/`` folder. That folder has no
``__init__.py``: it is only ever the package ``micronbert.kernels`` (micronbert/kernels/__init__.py
extends its ``__path__`` to the folder in a source checkout; a wheel installs the modules beside
it). These tests fail if the folder becomes a regular top-level package again: setuptools then
loads the PyPI package's ``egg_info.writers`` entry point (``kernels._internals.locking``) from
this folder while building metadata, and transformers imports this folder as ``kernels``.
"""
import os
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# imports both packages and a transformers ViT in one process, then checks which is which
_BOTH = textwrap.dedent("""
    import os, sys
    import micronbert, micronbert.kernels as mk
    import kernels
    from transformers import ViTConfig, ViTModel
    ViTModel(ViTConfig(image_size=32, patch_size=8, hidden_size=48, num_hidden_layers=1,
                       num_attention_heads=4, intermediate_size=96), add_pooling_layer=False)
    from micronbert.kernels import DiagonalMicroAttention, diagonal_micro_attention
    here = os.path.realpath(os.path.join(sys.argv[1], "kernels"))
    pypi = os.path.realpath(os.path.dirname(kernels.__file__))
    assert pypi != here and "site-packages" in pypi, pypi
    assert hasattr(kernels, "get_kernel"), dir(kernels)  # the PyPI package's API
    assert os.path.dirname(os.path.realpath(mk.dma.__file__)) in (here, os.path.realpath(mk.__path__[0]))
    print("ok", micronbert.__file__, mk.dma.__file__, kernels.__file__)
""")


def _pypi_kernels_or_skip():
    try:
        import importlib.metadata as md
        md.version("kernels")
    except Exception:
        pytest.skip("the PyPI `kernels` package is not installed (it comes with transformers >= 5)")
    pytest.importorskip("transformers")


def _run(cmd, cwd, env=None, timeout=600):
    res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                         env={**os.environ, **(env or {})})
    assert res.returncode == 0, f"{cmd} in {cwd}: rc={res.returncode}\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res.stdout


def test_the_folder_is_no_top_level_package():
    assert not os.path.exists(os.path.join(ROOT, "kernels", "__init__.py")), (
        "kernels/__init__.py makes the folder a top-level `kernels` package that shadows PyPI's")


@pytest.mark.parametrize("cwd", ["root", "elsewhere"])
def test_both_kernels_in_one_process(cwd, tmp_path):
    """From the repository root (on sys.path first, as `python -m` puts it) and from elsewhere."""
    _pypi_kernels_or_skip()
    where = ROOT if cwd == "root" else str(tmp_path)
    out = _run([sys.executable, "-c", _BOTH, ROOT], where)
    assert out.startswith("ok")


def test_wheel_installs_twice_and_imports_beside_pypi_kernels(tmp_path):
    """`pip install .` (a wheel, built with the PyPI package's entry points visible), twice, then
    both packages imported from a folder that is not the checkout."""
    _pypi_kernels_or_skip()
    target = tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index",
           "--no-build-isolation", "--disable-pip-version-check", "--target", str(target)]
    _run(pip + [ROOT], str(tmp_path))
    _run(pip + ["--upgrade", ROOT], str(tmp_path))
    assert (target / "micronbert" / "kernels" / "dma.py").is_file()
    assert not (target / "kernels").exists()  # the PyPI name stays free
    # the installed copy first on the path; the test venv's site-packages for the rest
    out = _run([sys.executable, "-c", _BOTH, ROOT], str(tmp_path), env={"PYTHONPATH": str(target)})
    assert str(target / "micronbert" / "kernels" / "dma.py") in out, out


def test_editable_install_twice_with_pypi_kernels(tmp_path):
    """`pip install -e .` as tools/setup.sh runs it, twice, into the test venv itself (the same
    source, so the venv is as before), then pytest collects from the root and from elsewhere."""
    _pypi_kernels_or_skip()
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index",
           "--disable-pip-version-check", "--no-build-isolation", "-e", ROOT]
    _run(pip, str(tmp_path))
    _run(pip, str(tmp_path))
    test = os.path.join(ROOT, "tests", "test_foreign_vit.py")
    for cmd, cwd in (([sys.executable, "-m", "pytest", "-q", "-x", "tests/test_foreign_vit.py"], ROOT),
                     ([os.path.join(os.path.dirname(sys.executable), "pytest"), "-q", "-x", test], ROOT),
                     ([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", test], str(tmp_path))):
        if not os.path.exists(cmd[0]):
            continue
        assert " passed" in _run(cmd, cwd)
