"""hific_tf: HiFiC (Mentzer et al., NeurIPS 2020) on TensorFlow 2 / tensorflow-compression."""

import setuptools

setuptools.setup(
    name="hific_tf",
    version="1.0.0",
    description="High-Fidelity Generative Image Compression on TF2 and tensorflow-compression",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.9,<3.12",
    packages=setuptools.find_packages(include=["hific_tf", "hific_tf.*"]) + ["hific_tf.configs_data"],
    package_dir={"hific_tf.configs_data": "configs"},
    package_data={"hific_tf.configs_data": ["*.json"],
                  "hific_tf": ["bundled/*/*.json", "bundled/*/*.npz", "bundled/compat/*/*.json",
                               "bundled/compat/*/*.npz", "bundled/history.json",
                               "bundled/presets.json"],
                  "hific_tf.serving": ["web/*"]},
    install_requires=[
        "tensorflow==2.14.1",
        "tensorflow-compression==2.14.1",
        "tensorflow-probability==0.22.1",
        "tensorflow-datasets==4.9.4",
        "tensorflow-metadata==1.15.0",
        "absl-py",
        "numpy<2",
        "Pillow>=10,<12",
        "tqdm",
    ],
    extras_require={
        "eval": ["pillow-heif", "imagecodecs", "scipy", "matplotlib"],
        "serve": ["fastapi", "uvicorn", "pillow-heif", "imagecodecs"],
        "dev": ["pytest", "selenium", "scikit-image<0.25", "tensorflow-addons==0.23.0"],
    },
    entry_points={"console_scripts": ["hific = hific_tf.cli.main:console_main"]},
)
