"""sepflow: music source separation for whole catalogs, as an Apache Beam batch pipeline."""
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
VERSION = "0.1.0"

CORE = [
    "apache-beam[dask]>=2.60",
    "numpy>=1.24",
    "scipy>=1.10",
    "librosa>=0.10",
    "soundfile>=0.12",
    "av>=14",
    "mutagen>=1.47",
    "soxr>=0.3",
    "torch==2.13.0",
    "pyarrow>=14",
    "fsspec>=2023.6",
    "pyyaml>=6",
    "fast-bss-eval>=0.1.4",
    "safetensors>=0.4",
    "pyloudnorm>=0.1.1",
    "matplotlib>=3.7",
]

EXTRAS = {
    "s3": ["s3fs>=2023.6"],
    "gcs": ["gcsfs>=2023.6"],
    "onnx": ["onnx>=1.15", "onnxruntime>=1.17"],
    # Demucs v4 models a user holds (sepflow never downloads weights).
    "demucs": ["demucs>=4.1.0"],
    "dev": [
        "pytest>=7",
        "hypothesis>=6.100",
        "ruff>=0.4",
        "mir_eval>=0.7",
        "scikit-learn>=1.3",
        "pandas>=2",
        "duckdb>=1.0",
        "s3fs>=2023.6",
        "moto[server]>=5",
        "dask>=2023.6",
        "distributed>=2023.6",
        "onnx>=1.15",
        "onnxruntime>=1.17",
        "safetensors>=0.4",
        "demucs>=4.1.0",
    ],
}

setup(
    name="sepflow",
    version=VERSION,
    description="Music source separation for whole catalogs, as an Apache Beam batch pipeline",
    long_description=(HERE / "README.md").read_text(encoding="utf-8") if (HERE / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["sepops", "sepops.*", "pipelines", "pipelines.*"]),
    package_data={"sepops": ["models/*/*.json", "models/*/*.safetensors", "models/*/*.npz"]},
    include_package_data=True,
    install_requires=CORE,
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["sepflow=pipelines.cli:main"]},
)
