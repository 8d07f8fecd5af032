from setuptools import setup

# The top-level kernels/ folder is installed as micronbert.kernels (never as a
# top-level `kernels` module: a popular package of that name exists).
setup(
    name="micronbert-fused",
    version="0.1.0",
    description="μ-BERT (Micron-BERT, CVPR 2023) with fused Triton kernels for "
                "Diagonal Micro-Attention and blockwise swapping",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    packages=["micronbert", "micronbert.data", "micronbert.kernels"],
    package_dir={"micronbert": "micronbert", "micronbert.kernels": "kernels"},
    # a range, so that a torch already installed (e.g. a CUDA build) is kept
    install_requires=["torch>=2.4", "numpy", "scipy", "tqdm", "matplotlib", "pillow", "scikit-image",
                      "pandas", "openpyxl", "av"],
    extras_require={
        "triton": ["triton>=3.6"],
        "dali": ["nvidia-dali-cuda120"],
        "faces": ["opencv-python-headless<5"],
        "tensorboard": ["tensorboard"],
        "xformers": ["xformers"],
        "test": ["pytest", "pytest-benchmark", "scikit-learn", "triton>=3.6", "transformers",
                 "opencv-python-headless<5", "nvidia-dali-cuda120"],
    },
    entry_points={"console_scripts": ["micronbert=micronbert.cli:main"]},
)
