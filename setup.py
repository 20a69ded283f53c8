"""earl_ros: ament_python package and pip-installable project (one setup.py serves both)."""
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "earl_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=["earl_ros", "earl_ros.*", "training", "training.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + PACKAGE]),
        ("share/" + PACKAGE, ["package.xml"]),
        ("share/" + PACKAGE + "/launch", glob("launch/*.launch.py")),
        ("share/" + PACKAGE + "/config", glob("config/*.yaml") + glob("config/*.xml") + glob("config/*.rviz")),
        ("share/" + PACKAGE + "/data/demo", glob("data/demo/*.json")),
        ("share/" + PACKAGE + "/data/demo/gt", glob("data/demo/gt/*.png")),
        ("share/" + PACKAGE + "/data/demo/clip", glob("data/demo/clip/*")),
    ],
    package_data={"earl_ros": ["config/*"], "training": ["configs/*.yaml"]},
    python_requires=">=3.10",
    install_requires=[
        "torch>=2.4",
        "transformers>=5.0",
        "tokenizers",
        "safetensors",
        "numpy",
        "pillow",
        "PyYAML",
        "onnx",
        "onnxruntime",
        "Levenshtein",
    ],
    extras_require={
        "ros": ["rosbags", "mcap", "opencv-python-headless"],
        "train": ["accelerate", "peft", "nltk", "pycocoevalcap", "pycocotools", "tqdm",
                  "tensorboard", "matplotlib"],
        # Never installed by CI: TensorRT wheels fetch their libraries from an unreachable server.
        "gpu": ["onnxruntime-gpu", "tensorrt"],
        "test": ["pytest", "pytest-randomly", "pytest-timeout", "hypothesis", "psutil"],
    },
    zip_safe=True,
    maintainer="earl_ros developers",
    maintainer_email="earl-ros@example.org",
    description="EARL egocentric hand-object interaction grounding for ROS 2",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "earl = earl_ros.ros.node:main",
            "earl-infer = earl_ros.cli.infer:main",
            "earl-export = earl_ros.cli.export:main",
            "earl-launch = earl_ros.cli.launch:main",
            "earl-query = earl_ros.cli.query:main",
            "earl-replay = earl_ros.cli.replay:main",
            "earl-demo = earl_ros.cli.demo:main",
        ],
    },
)
