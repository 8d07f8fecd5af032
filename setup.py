import glob
import os
import re

from setuptools import setup
from setuptools.command.build_py import build_py

# one version source: micronbert/__init__.py
VERSION = re.search(r'^__version__ = "([^"]+)"', open("micronbert/__init__.py", encoding="utf-8").read(),
                    re.M).group(1)
DATA = ["av", "opencv-python-headless<5", "openpyxl", "pandas", "pillow", "scikit-image", "scipy", "tqdm"]
VIZ = ["matplotlib"]


class BuildPy(build_py):
    """Installs the modules of the top-level kernels/ folder into micronbert/kernels/, beside
    micronbert/kernels/__init__.py: the fused ops are only ever the package micronbert.kernels.
    kernels/ has no __init__.py, so it is never a top-level `kernels` package that could shadow
    the PyPI package of that name (see micronbert/kernels/__init__.py)."""

    def find_package_modules(self, package, package_dir):
        modules = super().find_package_modules(package, package_dir)
        if package == "micronbert.kernels":
            modules += [(package, os.path.splitext(os.path.basename(f))[0], f)
                        for f in sorted(glob.glob(os.path.join("kernels", "*.py")))]
        return modules


setup(
    name="micronbert-fused",
    version=VERSION,
    description="μ-BERT (Micron-BERT, CVPR 2023) with fused Triton kernels for "
                "Diagonal Micro-Attention and blockwise swapping",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    packages=["micronbert", "micronbert.cli", "micronbert.data", "micronbert.kernels", "micronbert.recognition",
              "micronbert.slstt", "micronbert.spot"],
    # the drop-in ops and the model need only these; a range, so that a torch already
    # installed (e.g. a CUDA build) is kept
    install_requires=["torch>=2.4", "numpy", "triton>=3.6; platform_system == 'Linux'"],
    extras_require={
        "data": DATA,  # readers, loaders, sheets, faces, synthetic data, the CLI's training
        "viz": VIZ,  # pictures: maps, confusion matrices, curves
        "cli": DATA + VIZ,  # everything the `micronbert` command runs on the CPU
        "dali": ["nvidia-dali-cuda120"],
        "tensorboard": ["tensorboard"],
        "xformers": ["xformers"],
        "test": DATA + VIZ + ["pytest", "pytest-benchmark", "scikit-learn", "transformers",
                              "nvidia-dali-cuda120"],
    },
    cmdclass={"build_py": BuildPy},
    entry_points={"console_scripts": ["micronbert=micronbert.cli:main"]},
)
