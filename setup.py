import re

from setuptools import setup

# one version source: micronbert/__init__.py
VERSION = re.search(r'^__version__ = "([^"]+)"', open("micronbert/__init__.py", encoding="utf-8").read(),
                    re.M).group(1)
DATA = ["av", "opencv-python-headless<5", "openpyxl", "pandas", "pillow", "scikit-image", "scipy", "tqdm"]
VIZ = ["matplotlib"]

# The top-level kernels/ folder is installed as micronbert.kernels (never as a
# top-level `kernels` module: a popular package of that name exists).
setup(
    name="micronbert-fused",
    version=VERSION,
    description="μ-BERT (Micron-BERT, CVPR 2023) with fused Triton kernels for "
                "Diagonal Micro-Attention and blockwise swapping",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    packages=["micronbert", "micronbert.data", "micronbert.kernels"],
    package_dir={"micronbert": "micronbert", "micronbert.kernels": "kernels"},
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
    entry_points={"console_scripts": ["micronbert=micronbert.cli:main"]},
)
