"""Clip-level motion features of a video: the distribution of optical-flow magnitude.

Frames are sampled at a low rate (``fps``, default 4 per second) with
:func:`vcmr.video.frames.iter_samples`, scaled so the shorter side has ``short_side``
pixels, and dense optical flow is computed between consecutive samples by a backend of
:data:`FLOW_BACKENDS`:

* ``farneback``: OpenCV's ``calcOpticalFlowFarneback`` on grey frames (CPU, no weights);
* ``raft``: torchvision's RAFT (``raft_small`` or ``raft_large``) with its released
  weights (``weights: default`` downloads them once into the torch hub cache; a local
  ``.pth`` path or ``null`` for a random network, for tests and speed checks). RAFT needs
  both sides to be multiples of 8 and at least 128 pixels and inputs in ``[-1, 1]``: frames
  are resized to the nearest such size and the flow is resized back and rescaled to the
  analysis frame, so both backends report pixels of the same frame.

The video is cut into clips of ``clip_seconds`` (a trailing part shorter than one clip is
dropped). A flow pair (samples ``j - 1``, ``j``) belongs to the clip that contains the
midpoint of their times. Per clip, over every pixel of every pair of the clip:

* a histogram of the flow magnitude ``sqrt(dx^2 + dy^2)`` (pixels per pair of samples,
  at the analysis size) in ``bins`` equal bins with edges
  ``linspace(0, max_magnitude, bins + 1)``; magnitudes at or above ``max_magnitude`` count
  in the last bin. With the defaults (64 bins, 32 px) a bin is 0.5 px wide: bin 0 holds
  everything that moved less than half a pixel, so still frames land in bin 0;
* the mean magnitude, and its bin (the **motion token**, UT-CMVMR's clip class).

A video's feature array is ``[n_clips, bins + 2]`` float32: ``bins`` histogram fractions
(summing to 1), the mean magnitude, the token. :func:`motion_tokens` reads the tokens.
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Mapping, Optional, Tuple

import numpy as np

from vcmr.video.features import video_stream_info
from vcmr.video.frames import FrameGrid, iter_samples
from vcmr.video.probe import MediaError

#: RAFT's constraints on its input size.
RAFT_MULTIPLE = 8
RAFT_MIN_SIDE = 128


@dataclasses.dataclass(frozen=True)
class MotionSettings:
    """How motion is measured and quantised (the ``motion:`` config block, minus the backend).

    Attributes:
        fps: frames sampled per second.
        short_side: shorter side of the analysis frames, pixels (aspect kept).
        clip_seconds: clip length in seconds.
        bins: histogram bins (and token classes) of the flow magnitude.
        max_magnitude: top edge of the last bin, pixels per pair of samples.
    """

    fps: float
    short_side: int
    clip_seconds: float
    bins: int
    max_magnitude: float

    def __post_init__(self) -> None:
        for name in ("fps", "clip_seconds", "max_magnitude"):
            if not float(getattr(self, name)) > 0:
                raise ValueError(f"motion.{name} must be > 0, got {getattr(self, name)}")
        if int(self.bins) < 1 or int(self.short_side) < 1:
            raise ValueError(f"motion.bins and motion.short_side must be >= 1, got {self.bins}, {self.short_side}")
        if self.fps * self.clip_seconds < 2:
            raise ValueError(
                f"motion.fps * motion.clip_seconds must be >= 2 (two samples per clip), got {self.fps * self.clip_seconds}"
            )

    @classmethod
    def from_config(cls, node: Mapping[str, Any] | Any) -> "MotionSettings":
        """From a mapping or config node with one key per field (every key required)."""
        get = node.get if isinstance(node, Mapping) else lambda k: getattr(node, k, None)
        missing = [f.name for f in dataclasses.fields(cls) if get(f.name) is None]
        if missing:
            raise KeyError(f"motion settings: missing keys {missing}")
        return cls(**{f.name: get(f.name) for f in dataclasses.fields(cls)})

    @property
    def edges(self) -> np.ndarray:
        """``[bins + 1]`` bin edges of the flow magnitude, pixels."""
        return np.linspace(0.0, self.max_magnitude, self.bins + 1)

    @property
    def n_columns(self) -> int:
        """Columns of a feature array: histogram, mean magnitude, token."""
        return self.bins + 2


def magnitude_bin(magnitude: np.ndarray | float, bins: int, max_magnitude: float) -> np.ndarray:
    """Bin index of each magnitude: ``floor(m / (max_magnitude / bins))`` clipped to ``[0, bins - 1]``."""
    m = np.asarray(magnitude, dtype=np.float64)
    return np.clip(np.floor(m * (bins / max_magnitude)), 0, bins - 1).astype(np.int64)


# --------------------------------------------------------------------------------------
# Flow backends: __call__(prev [N, H, W, 3] uint8, nxt [N, H, W, 3] uint8) -> [N, H, W, 2]
# float32 flow in pixels of the given frames (dx, dy), from prev to nxt.
# --------------------------------------------------------------------------------------


class FarnebackFlow:
    """OpenCV's Farnebäck dense flow on grey frames (arguments of ``cv2.calcOpticalFlowFarneback``)."""

    def __init__(self, pyr_scale: float, levels: int, winsize: int, iterations: int, poly_n: int,
                 poly_sigma: float, batch_size: int = 1):
        try:
            import cv2
        except ImportError as exc:
            raise ImportError("the farneback flow backend needs OpenCV: pip install 'vcmr[video]'") from exc
        self.cv2 = cv2
        self.args = dict(pyr_scale=float(pyr_scale), levels=int(levels), winsize=int(winsize),
                         iterations=int(iterations), poly_n=int(poly_n), poly_sigma=float(poly_sigma), flags=0)
        self.batch_size = int(batch_size)

    def __call__(self, prev: np.ndarray, nxt: np.ndarray) -> np.ndarray:
        cv2 = self.cv2
        out = []
        for a, b in zip(prev, nxt):
            ga = cv2.cvtColor(np.ascontiguousarray(a), cv2.COLOR_RGB2GRAY)
            gb = cv2.cvtColor(np.ascontiguousarray(b), cv2.COLOR_RGB2GRAY)
            out.append(cv2.calcOpticalFlowFarneback(ga, gb, None, **self.args))
        return np.stack(out).astype(np.float32)


def _raft_side(n: int) -> int:
    return max(RAFT_MIN_SIDE, int(math.ceil(n / RAFT_MULTIPLE)) * RAFT_MULTIPLE)


#: ``raft.model`` -> (torchvision builder name, weights enum name).
RAFT_MODELS: Dict[str, Tuple[str, str]] = {
    "raft_small": ("raft_small", "Raft_Small_Weights"),
    "raft_large": ("raft_large", "Raft_Large_Weights"),
}


def load_raft(model: str, weights: Optional[str]):
    """A torchvision RAFT in eval mode.

    Args:
        model: a key of :data:`RAFT_MODELS`.
        weights: ``"default"`` (torchvision's released weights, downloaded once into the
            torch hub cache), a local ``.pth`` state-dict file, or ``None`` (random weights).

    Raises:
        KeyError: unknown model name.
        FileNotFoundError: a local weights file does not exist.
        RuntimeError: the default weights cannot be downloaded (offline): the message names
            the URL and how to pass a local file.
    """
    import torch
    from torchvision.models import optical_flow

    if model not in RAFT_MODELS:
        raise KeyError(f"motion.backends.raft.model: unknown model '{model}'; known: {sorted(RAFT_MODELS)}")
    builder_name, enum_name = RAFT_MODELS[model]
    builder = getattr(optical_flow, builder_name)
    if weights is None:
        return builder(weights=None).eval()
    if weights == "default":
        enum = getattr(optical_flow, enum_name).DEFAULT
        try:
            return builder(weights=enum, progress=False).eval()
        except Exception as exc:  # URLError, HTTPError, socket errors: no network
            hub = Path(torch.hub.get_dir()) / "checkpoints"
            raise RuntimeError(
                f"cannot download the {model} weights from {enum.url} ({exc}). Download the file on a "
                f"machine with internet access and pass it with motion.backends.raft.weights=/path/to/"
                f"{Path(enum.url).name} (or copy it into {hub})."
            ) from exc
    path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(f"motion.backends.raft.weights: weights file not found: {path}")
    net = builder(weights=None)
    state = torch.load(path, map_location="cpu", weights_only=True)
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:
        raise RuntimeError(f"{path}: not a {model} state dict: {exc}") from exc
    return net.eval()


class RaftFlow:
    """torchvision RAFT dense flow.

    Args:
        model: ``raft_small`` or ``raft_large``.
        weights: ``default``, a local ``.pth`` file, or ``None`` (random; tests and speed checks).
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda``.
        batch_size: frame pairs per forward pass.
        num_flow_updates: RAFT's refinement iterations.
    """

    def __init__(self, model: str, weights: Optional[str], device: str, batch_size: int, num_flow_updates: int):
        import torch

        devices = {"auto": "cuda" if torch.cuda.is_available() else "cpu", "cpu": "cpu", "cuda": "cuda"}
        if device not in devices:
            raise ValueError(f"motion.backends.raft.device must be one of {sorted(devices)}, got '{device}'")
        self.device = torch.device(devices[device])
        self.net = load_raft(model, weights).to(self.device)
        self.batch_size = int(batch_size)
        self.num_flow_updates = int(num_flow_updates)

    def __call__(self, prev: np.ndarray, nxt: np.ndarray) -> np.ndarray:
        import torch
        import torch.nn.functional as F

        n, h, w = prev.shape[:3]
        th, tw = _raft_side(h), _raft_side(w)

        def prep(x: np.ndarray) -> torch.Tensor:
            t = torch.from_numpy(np.ascontiguousarray(x)).to(self.device).permute(0, 3, 1, 2).float()
            if (th, tw) != (h, w):
                t = F.interpolate(t, size=(th, tw), mode="bilinear", align_corners=False)
            return t / 127.5 - 1.0  # [0, 255] -> [-1, 1], RAFT's input range

        with torch.inference_mode():
            flow = self.net(prep(prev), prep(nxt), num_flow_updates=self.num_flow_updates)[-1]  # [N, 2, th, tw]
            if (th, tw) != (h, w):
                flow = F.interpolate(flow, size=(h, w), mode="bilinear", align_corners=False)
                flow = flow * torch.tensor([w / tw, h / th], device=flow.device).view(1, 2, 1, 1)
        return flow.permute(0, 2, 3, 1).float().cpu().numpy()


#: ``motion.backend`` -> constructor(**motion.backends[name]).
FLOW_BACKENDS: Dict[str, Callable[..., Any]] = {
    "farneback": FarnebackFlow,
    "raft": RaftFlow,
}


def build_flow_backend(name: str, args: Mapping[str, Any]) -> Any:
    """``FLOW_BACKENDS[name](**args)`` with errors naming the key."""
    if name not in FLOW_BACKENDS:
        raise KeyError(f"motion.backend: unknown flow backend '{name}'; known: {sorted(FLOW_BACKENDS)}")
    try:
        return FLOW_BACKENDS[name](**dict(args))
    except TypeError as exc:
        raise TypeError(f"motion.backends.{name}: bad arguments: {exc}") from exc


# --------------------------------------------------------------------------------------
# Per-clip statistics
# --------------------------------------------------------------------------------------


class _ClipAccumulator:
    """Histogram counts, magnitude sums and pixel counts per clip."""

    def __init__(self, n_clips: int, s: MotionSettings):
        self.s = s
        self.counts = np.zeros((n_clips, s.bins), np.float64)
        self.sums = np.zeros(n_clips, np.float64)
        self.pixels = np.zeros(n_clips, np.float64)

    def add(self, clips: np.ndarray, flow: np.ndarray) -> None:
        mag = np.sqrt(np.square(flow[..., 0], dtype=np.float64) + np.square(flow[..., 1], dtype=np.float64))
        idx = magnitude_bin(mag, self.s.bins, self.s.max_magnitude)
        for c, m, i in zip(clips, mag, idx):
            self.counts[c] += np.bincount(i.ravel(), minlength=self.s.bins)
            self.sums[c] += m.sum()
            self.pixels[c] += m.size

    def result(self, source: str) -> np.ndarray:
        empty = np.flatnonzero(self.pixels == 0)
        if empty.size:
            raise ValueError(f"{source}: no frame pair in clips {empty.tolist()} (frames missing)")
        hist = self.counts / self.pixels[:, None]
        mean = self.sums / self.pixels
        token = magnitude_bin(mean, self.s.bins, self.s.max_magnitude)
        return np.concatenate([hist, mean[:, None], token[:, None]], axis=1).astype(np.float32)


def motion_from_frames(
    frames: Iterable[Tuple[float, np.ndarray]],
    n_clips: int,
    s: MotionSettings,
    backend: Any,
    source: str = "frames",
) -> np.ndarray:
    """Motion features from ``(time s, [H, W, 3] uint8 RGB)`` samples in time order.

    Args:
        frames: samples; times relative to the start of the first clip.
        n_clips: number of clips of ``s.clip_seconds``; pairs past the last clip are ignored.
        s: settings.
        backend: a flow backend (see :data:`FLOW_BACKENDS`).
        source: name used in error messages (the file).

    Returns:
        ``[n_clips, s.bins + 2]`` float32 (histogram fractions, mean magnitude, token).

    Raises:
        ValueError: a clip received no frame pair.
    """
    acc = _ClipAccumulator(n_clips, s)
    batch = max(1, int(getattr(backend, "batch_size", 1)))
    prev: Optional[Tuple[float, np.ndarray]] = None
    pending_a, pending_b, pending_c = [], [], []

    def flush() -> None:
        if pending_a:
            acc.add(np.asarray(pending_c), backend(np.stack(pending_a), np.stack(pending_b)))
            pending_a.clear(), pending_b.clear(), pending_c.clear()

    for t, img in frames:
        if prev is not None:
            clip = int(math.floor(0.5 * (prev[0] + t) / s.clip_seconds))
            if 0 <= clip < n_clips:
                if pending_a and pending_a[0].shape != img.shape:
                    flush()
                pending_a.append(prev[1])
                pending_b.append(img)
                pending_c.append(clip)
                if len(pending_a) >= batch:
                    flush()
        prev = (float(t), img)
    flush()
    return acc.result(source)


def video_motion(
    path: str | os.PathLike,
    s: MotionSettings,
    backend: Any,
    start: float = 0.0,
    duration: Optional[float] = None,
) -> np.ndarray:
    """:func:`motion_from_frames` of the window ``[start, start + duration)`` of a video file.

    ``duration=None`` runs to the end of the video stream.

    Raises:
        MediaError: the file cannot be opened or decoded, has no video stream, or the window
            is shorter than one clip.
        ValueError: a clip received no frame pair (frames missing).
    """
    path = Path(path)
    if duration is None:
        duration = video_stream_info(path).duration - start
    n_clips = int(math.floor(duration / s.clip_seconds + 1e-6))
    if n_clips < 1:
        raise MediaError(path, f"video window of {duration:.2f} s is shorter than one clip ({s.clip_seconds} s)")
    grid = FrameGrid(fps=float(s.fps), short_side=int(s.short_side), crop_square=False)
    samples = ((smp.time, smp.image) for smp in iter_samples(path, start, n_clips * s.clip_seconds, [grid]))
    return motion_from_frames(samples, n_clips, s, backend, source=str(path))


def motion_tokens(features: np.ndarray) -> np.ndarray:
    """``[n_clips]`` int64 motion tokens (the last column) of a feature array."""
    features = np.asarray(features)
    if features.ndim != 2 or features.shape[1] < 3:
        raise ValueError(f"motion features must be [n_clips, bins + 2], got shape {features.shape}")
    return features[:, -1].astype(np.int64)
