"""Encoder exports and loading of published checkpoints.

The export format of this project is one ``.safetensors`` file: the module's
``state_dict`` plus metadata (all strings)::

    vcmr_format   "encoder/1"
    name          registry name, e.g. "samplecnn"
    args          JSON of the constructor arguments
    extra         JSON of anything else the stage records (sample_rate, stage, ...)

:func:`load_encoder` also reads the layouts other projects publish. The key mapping
onto :class:`~vcmr.models.samplecnn.SampleCNN` (``blocks.{i}.{j}.*``, ``j=0`` conv,
``j=1`` batch norm) is:

==========================================  ==========================  ==================
source                                      keys in the file            mapped to
==========================================  ==========================  ==================
this project, export (``.safetensors``)     ``blocks.*``                unchanged
this project, Lightning ``.ckpt``           ``encoder.blocks.*``        ``blocks.*``
CLMR state dict (``.pt``)                   ``encoder.sequential.*``    ``blocks.*``
CLMR Lightning ``.ckpt``                    ``model.encoder.sequential.*``  ``blocks.*``
VCMR Lightning ``.ckpt`` (stage 1 and 2)    ``encoder.all_blocks.*``    ``blocks.*``
==========================================  ==========================  ==================

Projection heads, classifier layers (``fc.*``) and the video side are ignored. For
foreign checkpoints the architecture is read off the weight shapes (first kernel,
channels, last kernel); the pool size, which has no weights, defaults to 3.

Nothing is unpickled beyond tensors and plain containers: ``.safetensors`` files are
read with safetensors, anything else with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple

import torch
from torch import nn

from vcmr.models.registry import build_module
from vcmr.utils import atomic_path

FORMAT = "encoder/1"

#: (prefix in the file, inner name of the block list) -> mapped onto ``blocks.``
SAMPLECNN_LAYOUTS: Tuple[Tuple[str, str], ...] = (
    ("", "blocks."),
    ("encoder.", "blocks."),
    ("audio_encoder.", "blocks."),
    ("encoder.", "all_blocks."),
    ("encoder.", "sequential."),
    ("model.encoder.", "sequential."),
    ("", "sequential."),
    ("", "all_blocks."),
)


class CheckpointError(RuntimeError):
    """A checkpoint cannot be read or matches no known layout."""


def save_encoder(
    path: str | os.PathLike,
    module: nn.Module,
    name: str,
    args: Mapping[str, Any],
    extra: Optional[Mapping[str, Any]] = None,
) -> Path:
    """Export ``module`` (built as ``registry[name](**args)``) to a ``.safetensors`` file.

    The write is atomic. ``extra`` must be JSON-serialisable (e.g. ``sample_rate``).
    """
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"{path}: encoder exports use the .safetensors extension")
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    meta = {
        "vcmr_format": FORMAT,
        "name": name,
        "args": json.dumps(dict(args)),
        "extra": json.dumps(dict(extra or {})),
    }
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=meta)
    return path


def load_tensors_only(path: str | os.PathLike, allowed: Tuple[type, ...] = ()) -> Any:
    """``torch.load(path, weights_only=True)``, also when ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` is set.

    Every checkpoint the project reads goes through here (exports, foreign checkpoints,
    taggers, ``resume``), so a file carrying pickled code is never unpickled.

    Args:
        path: the file.
        allowed: extra classes the file may hold (e.g. ``argparse.Namespace`` in VCMR's hparams).

    Raises:
        CheckpointError: naming the file, when it holds anything else than tensors, plain
            containers and ``allowed`` classes, or cannot be read.
    """
    saved = os.environ.pop("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", None)
    try:
        with torch.serialization.safe_globals(list(allowed)):
            return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(
            f"{path}: cannot be read as tensors only ({type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}). "
            "Files that need arbitrary pickled objects are not loaded; re-save the state_dict "
            "with torch.save(model.state_dict(), ...) or export with vcmr.save_encoder."
        ) from exc
    finally:
        if saved is not None:
            os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = saved


def _torch_load(path: Path) -> Any:
    return load_tensors_only(path, allowed=(argparse.Namespace,))


def _infer_samplecnn_args(state: Mapping[str, torch.Tensor], pool_size: int) -> Dict[str, Any]:
    idx = sorted({int(m.group(1)) for k in state if (m := re.match(r"blocks\.(\d+)\.0\.weight$", k))})
    if len(idx) < 3 or idx != list(range(len(idx))):
        raise CheckpointError(f"SampleCNN weights have unexpected block indices {idx}")
    w = [state[f"blocks.{i}.0.weight"] for i in idx]
    n = len(w) - 2
    k0 = int(w[0].shape[-1])
    return {
        "input_length": k0 * pool_size**n,
        "first_block": {"out_channels": int(w[0].shape[0]), "kernel_size": k0},
        "n_blocks": n,
        "channels": [int(t.shape[0]) for t in w[1:-1]],
        "kernel_size": int(w[1].shape[-1]),
        "pool_size": pool_size,
        "last_block": {"out_channels": int(w[-1].shape[0]), "kernel_size": int(w[-1].shape[-1])},
    }


def _extract_samplecnn(state: Mapping[str, Any], path: Path) -> Dict[str, torch.Tensor]:
    for prefix, inner in SAMPLECNN_LAYOUTS:
        head = prefix + inner
        if f"{head}0.0.weight" in state:
            return {
                "blocks." + k[len(head):]: v
                for k, v in state.items()
                if k.startswith(head) and isinstance(v, torch.Tensor)
            }
    sample = ", ".join(list(state)[:6])
    raise CheckpointError(
        f"{path}: no SampleCNN weights found (looked for {[p + i for p, i in SAMPLECNN_LAYOUTS]}); "
        f"first keys are: {sample}"
    )


def load_encoder_with_meta(
    path: str | os.PathLike, pool_size: int = 3, strict: bool = True
) -> Tuple[nn.Module, Dict[str, Any]]:
    """Load an encoder and describe it.

    Returns:
        ``(module, meta)`` where ``meta`` has ``name``, ``args``, ``source`` (``vcmr``,
        ``lightning`` or ``state_dict``) and the export's ``extra`` entries. The module is
        in eval mode.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    if path.suffix == ".safetensors":
        from safetensors import safe_open
        from safetensors.torch import load_file

        try:
            with safe_open(str(path), framework="pt") as fh:
                meta = fh.metadata() or {}
            state = load_file(str(path))
        except Exception as exc:
            raise CheckpointError(f"{path}: not a readable safetensors file: {exc}") from exc
        if meta.get("vcmr_format") == FORMAT:
            name, args = meta["name"], json.loads(meta["args"])
            module = build_module(name, args)
            module.load_state_dict(state, strict=strict)
            info = {"name": name, "args": args, "source": "vcmr", **json.loads(meta.get("extra", "{}"))}
            return module.eval(), info
        source = "state_dict"
    else:
        obj = _torch_load(path)
        if not isinstance(obj, Mapping):
            raise CheckpointError(f"{path}: expected a dict of tensors, got {type(obj).__name__}")
        if "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
            state, source = obj["state_dict"], "lightning"
        else:
            state, source = obj, "state_dict"
    weights = _extract_samplecnn(state, path)
    args = _infer_samplecnn_args(weights, pool_size)
    module = build_module("samplecnn", args)
    missing, unexpected = module.load_state_dict(weights, strict=False)
    if strict and (missing or unexpected):
        raise CheckpointError(f"{path}: SampleCNN weights do not match: missing={missing} unexpected={unexpected}")
    return module.eval(), {"name": "samplecnn", "args": args, "source": source}


def load_encoder(path: str | os.PathLike, pool_size: int = 3, strict: bool = True) -> nn.Module:
    """Load a music encoder from any accepted layout (see module docstring). Eval mode."""
    return load_encoder_with_meta(path, pool_size=pool_size, strict=strict)[0]


# --------------------------------------------------------------------------------------
# The joint music-video model: one file
# --------------------------------------------------------------------------------------

MODEL_FORMAT = "music_video_model/1"
#: File name of the joint model inside a run's ``export/`` folder.
MODEL_FILE = "model.safetensors"


def save_model(path: str | os.PathLike, model: nn.Module, extra: Optional[Mapping[str, Any]] = None) -> Path:
    """Export a :class:`~vcmr.models.joint.MusicVideoModel` (weights + its spec) to one ``.safetensors`` file.

    ``extra`` (JSON-serialisable) records what a user of the model needs besides the
    weights: ``sample_rate``, the ``frame_encoder`` the video features came from, ...
    The write is atomic.
    """
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"{path}: model exports use the .safetensors extension")
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = {"vcmr_format": MODEL_FORMAT, "spec": json.dumps(model.spec), "extra": json.dumps(dict(extra or {}))}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=meta)
    return path


def find_model_file(path: str | os.PathLike) -> Path:
    """A joint-model export file, or the ``export/model.safetensors`` of a run folder or export folder."""
    p = Path(path)
    if p.is_dir():
        for candidate in (p / MODEL_FILE, p / "export" / MODEL_FILE):
            if candidate.is_file():
                return candidate
        raise CheckpointError(f"{p}: no {MODEL_FILE} in it or in its export/ folder (is it a stage-2 run folder?)")
    if not p.is_file():
        raise CheckpointError(f"{p}: model file not found")
    return p


def load_model(path: str | os.PathLike) -> nn.Module:
    """Load a joint model exported by stage 2 (a file, a run folder or its ``export/`` folder).

    Returns:
        The :class:`~vcmr.models.joint.MusicVideoModel` in eval mode; ``model.meta`` holds
        the export's ``extra`` entries plus ``path``.
    """
    from safetensors import safe_open
    from safetensors.torch import load_file

    from vcmr.models.joint import build_joint_model

    file = find_model_file(path)
    try:
        with safe_open(str(file), framework="pt") as fh:
            meta = fh.metadata() or {}
        state = load_file(str(file))
    except Exception as exc:
        raise CheckpointError(f"{file}: not a readable safetensors file: {exc}") from exc
    if meta.get("vcmr_format") != MODEL_FORMAT:
        found = meta.get("vcmr_format", "no vcmr_format entry")
        raise CheckpointError(
            f"{file}: not a joint music-video model export ({found}); "
            "audio-encoder files load with vcmr.load_encoder"
        )
    model = build_joint_model(json.loads(meta["spec"]))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{file}: weights do not match the model spec it records: {exc}") from exc
    model.meta = {**json.loads(meta.get("extra", "{}")), "path": str(file)}
    return model.eval()


# --------------------------------------------------------------------------------------
# Any registered module with a spec: one file (the seed retrieval models)
# --------------------------------------------------------------------------------------

SPEC_FORMAT = "spec_model/1"


def save_spec_model(path: str | os.PathLike, model: nn.Module, extra: Optional[Mapping[str, Any]] = None) -> Path:
    """Export a module that carries ``model.spec = {"name", "args"}`` (a :data:`MODULES` entry).

    The file holds the ``state_dict`` (buffers included, e.g. fitted input transforms) and
    the metadata ``vcmr_format``, ``spec`` and ``extra`` (JSON: feature settings, ...).
    The write is atomic.
    """
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"{path}: model exports use the .safetensors extension")
    spec = getattr(model, "spec", None)
    if not isinstance(spec, Mapping) or "name" not in spec or "args" not in spec:
        raise ValueError(f"{type(model).__name__} has no spec {{'name', 'args'}}; it cannot be exported with save_spec_model")
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = {"vcmr_format": SPEC_FORMAT, "spec": json.dumps(dict(spec)), "extra": json.dumps(dict(extra or {}))}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=meta)
    return path


def load_spec_model(path: str | os.PathLike) -> nn.Module:
    """Load a file written by :func:`save_spec_model` (a file, a run folder or its ``export/``).

    Returns:
        The module in eval mode; ``model.meta`` holds the export's ``extra`` plus ``path``.

    Raises:
        CheckpointError: unreadable file, another format, or weights that do not fit the spec.
    """
    from safetensors import safe_open
    from safetensors.torch import load_file

    file = find_model_file(path)
    try:
        with safe_open(str(file), framework="pt") as fh:
            meta = fh.metadata() or {}
        state = load_file(str(file))
    except Exception as exc:
        raise CheckpointError(f"{file}: not a readable safetensors file: {exc}") from exc
    if meta.get("vcmr_format") != SPEC_FORMAT:
        raise CheckpointError(f"{file}: not a spec-model export ({meta.get('vcmr_format', 'no vcmr_format entry')})")
    spec = json.loads(meta["spec"])
    model = build_module(str(spec["name"]), spec["args"])
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{file}: weights do not match the model spec it records: {exc}") from exc
    model.meta = {**json.loads(meta.get("extra", "{}")), "path": str(file)}
    return model.eval()


def _load_media_model(file: Path) -> nn.Module:
    from vcmr.models.vmnet import MediaModel

    model = load_spec_model(file)
    deploy = model.meta.get("deploy")
    if not deploy:
        raise CheckpointError(f"{file}: the export records no 'deploy' settings (feature front ends); re-export it")
    try:
        return MediaModel(model, deploy, model.meta).eval()
    except ValueError as exc:
        raise CheckpointError(f"{file}: {exc}") from exc


#: ``vcmr_format`` -> loader of a model that takes media (waveform windows, per-second frame features).
MEDIA_LOADERS = {MODEL_FORMAT: load_model, SPEC_FORMAT: _load_media_model}


def load_any_model(path: str | os.PathLike) -> nn.Module:
    """Any retrieval export as a media model: a stage-2 joint model (:func:`load_model`), or a
    spec-model export (VM-NET, the clip matcher, the regression) behind its feature front ends
    (:class:`vcmr.models.vmnet.MediaModel`). Both expose ``encode_audio([B, 1, L] waveform)``,
    ``encode_video([B, S, F])``, ``input_length``, ``video_input_dim``, ``embed_dim``,
    ``spec`` and ``meta`` (with ``sample_rate``)."""
    from safetensors import safe_open

    file = find_model_file(path)
    try:
        with safe_open(str(file), framework="pt") as fh:
            fmt = (fh.metadata() or {}).get("vcmr_format", "no vcmr_format entry")
    except Exception as exc:
        raise CheckpointError(f"{file}: not a readable safetensors file: {exc}") from exc
    if fmt not in MEDIA_LOADERS:
        raise CheckpointError(f"{file}: {fmt} is not a retrieval model export (known: {sorted(MEDIA_LOADERS)})")
    return MEDIA_LOADERS[fmt](file)


# --------------------------------------------------------------------------------------
# ONNX: an encoder (or a tagger) for inference outside PyTorch
# --------------------------------------------------------------------------------------

#: ONNX opset written by :func:`export_onnx`.
ONNX_OPSET = 17


def export_onnx(
    module: nn.Module,
    path: str | os.PathLike,
    example: torch.Tensor,
    input_name: str = "waveform",
    output_name: str = "embedding",
    atol: float = 1e-4,
) -> Path:
    """Write ``module`` as ONNX with a dynamic batch axis and check it against PyTorch.

    ``module`` maps ``[B, 1, L]`` float32 waveforms to ``[B, D]`` (an encoder such as
    :class:`~vcmr.models.samplecnn.SampleCNN`, or a tagger giving logits). It is exported in
    eval mode with PyTorch's TorchScript-based exporter (``dynamo=False``: it needs only the
    ``onnx`` package), then run with onnxruntime on ``example`` and on a batch of another size;
    both must match PyTorch within ``atol``. The write is atomic.

    Args:
        module: the model; its mode is restored afterwards.
        path: ``.onnx`` file.
        example: ``[B, 1, L]`` input used for tracing and for the check.
        input_name, output_name: names of the graph's input and output.
        atol: largest absolute difference allowed between onnxruntime and PyTorch.

    Returns:
        ``path``.

    Raises:
        ImportError: ``onnx`` or ``onnxruntime`` is missing (``pip install 'vcmr[export]'``).
        ValueError: the ONNX model's outputs differ from PyTorch's by more than ``atol``.
    """
    import warnings

    try:
        import onnx  # noqa: F401
        import onnxruntime as ort
    except ImportError as exc:
        raise ImportError("ONNX export needs onnx and onnxruntime: pip install 'vcmr[export]'") from exc
    path = Path(path)
    if path.suffix != ".onnx":
        raise ValueError(f"{path}: ONNX exports use the .onnx extension")
    was_training = module.training
    module.eval()
    example = example.detach().float().cpu()
    other = torch.randn(example.shape[0] + 1, *example.shape[1:], generator=torch.Generator().manual_seed(0))
    try:
        with atomic_path(path) as tmp, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's deprecation and tracer notes
            torch.onnx.export(
                module, (example,), str(tmp), input_names=[input_name], output_names=[output_name],
                dynamic_axes={input_name: {0: "batch"}, output_name: {0: "batch"}}, opset_version=ONNX_OPSET,
                dynamo=False,
            )
            session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
            for x in (example, other):
                with torch.no_grad():
                    expected = module(x).numpy()
                got = session.run([output_name], {input_name: x.numpy()})[0]
                err = float(abs(got - expected).max())
                if got.shape != expected.shape or err > atol:
                    raise ValueError(
                        f"{path}: ONNX output differs from PyTorch (shape {got.shape} vs {expected.shape}, "
                        f"max abs difference {err:.3g} > {atol})"
                    )
    finally:
        module.train(was_training)
    return path
