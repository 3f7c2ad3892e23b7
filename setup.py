"""vidxai: dataset-scale visual explanations (AOSA) for video classifiers on Apache Beam."""

from setuptools import find_packages, setup

REQUIREMENTS = [
    # [aws]: boto3 for s3:// inputs and outputs; not the [torch]/[ml-cpu] extras: they
    # conflict with torch 2.14
    "apache-beam[aws]==2.77.0",
    "torch==2.14.1",
    "torchvision==0.29.1",
    "opencv-python-headless>=4.9",
    "pyarrow>=14,<26",
    "numpy>=1.24,<2.5",
    "safetensors>=0.4",
    # the report's statistics (bootstrap intervals, Wilcoxon, Spearman); 1.15 for bootstrap(rng=)
    "scipy>=1.15,<2",
    "matplotlib>=3.8,<4",  # the report's plots and animated overlays (GIF through Pillow)
    "scikit-learn>=1.5,<1.9",  # Video-TCAV: SGDClassifier / LogisticRegression CAVs, KMeans
    # the local progress line: format_meter (bar, rate, ETA) and status_printer (the line
    # rewritten on a terminal)
    "tqdm>=4.66,<5",
]

setup(
    name="vidxai",
    version="0.1.0",
    description="Adaptive occlusion sensitivity analysis (AOSA) for video classifiers, on Beam",
    python_requires=">=3.10",
    packages=find_packages(include=["pipeline", "pipeline.*", "transforms", "transforms.*",
                                    "models", "models.*"]),
    package_data={"models": ["data/*.txt", "data/*.pt", "data/*.json"]},
    py_modules=["run_pipeline"],
    install_requires=REQUIREMENTS,
    # captum: an independent implementation that the tests compare osa and gradcam against;
    # duckdb: the tests query the Hive-partitioned outputs the way users do;
    # moto[server]: a real S3 API server the object-storage tests start on 127.0.0.1;
    # hypothesis: random manifests through the listing stage (tests/test_manifest_property.py).
    extras_require={"test": ["pytest>=7", "ruff>=0.4", "pandas>=2", "captum==0.9.0",
                            "duckdb>=1.0", "moto[server]==5.2.5", "hypothesis>=6.100,<7"]},
    entry_points={"console_scripts": ["vidxai=run_pipeline:main"]},
)
