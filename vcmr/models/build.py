"""One place that builds each kind of model component from configuration.

A component is a ``{name, args}`` block naming a registered class
(:data:`vcmr.models.registry.MODULES`). Audio encoders may instead come from a file
(this project's export, or a CLMR/VCMR checkpoint); :func:`build_audio_encoder` is the
only function that decides between the two, and checks the file's sample rate.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Mapping, Tuple

from torch import nn

from vcmr.config import to_container
from vcmr.models.export import load_encoder_with_meta
from vcmr.models.joint import MusicVideoModel, build_joint_model, projection_spec
from vcmr.models.registry import build_module

#: Values of an ``*_init`` key that mean "fresh weights from the spec".
SCRATCH = ("none", "scratch", "")


def component_spec(block: Mapping[str, Any]) -> Dict[str, Any]:
    """Plain ``{"name": str, "args": dict}`` copy of a config block."""
    return {"name": str(block["name"]), "args": dict(to_container(block["args"]) or {})}


def build_component(block: Mapping[str, Any]) -> nn.Module:
    """``MODULES[block.name](**block.args)``."""
    spec = component_spec(block)
    return build_module(spec["name"], spec["args"])


def pick(name: str, blocks: Mapping[str, Any], key: str) -> Dict[str, Any]:
    """``{name, args}`` of the entry ``name`` of a ``{name: args}`` mapping (e.g. ``model.video_encoders``).

    Raises:
        ValueError: ``name`` has no block; the message names ``key`` and the known names.
    """
    if name not in blocks:
        raise ValueError(f"{key}: '{name}' has no argument block (known: {sorted(blocks)})")
    return {"name": str(name), "args": dict(to_container(blocks[name]) or {})}


def build_audio_encoder(
    init: str,
    spec: Mapping[str, Any],
    sample_rate: int,
    pool_size: int = 3,
    key: str = "model.audio_init",
) -> Tuple[nn.Module, Dict[str, Any]]:
    """The audio encoder named by an ``init`` setting, and the ``{name, args}`` it was built from.

    Args:
        init: ``none``/``scratch`` (fresh weights from ``spec``), or a file
            :func:`~vcmr.models.export.load_encoder_with_meta` reads.
        spec: ``{name, args}`` block used for fresh weights.
        sample_rate: Hz of the data the encoder will see; a file recording another rate is refused.
        pool_size: pool size of foreign SampleCNN checkpoints (it has no weights).
        key: config key of ``init``, for error messages.

    Returns:
        ``(encoder, {"name", "args"})``; a loaded encoder is returned in train mode.
    """
    init = str(init)
    if init in SCRATCH:
        spec = component_spec(spec)
        return build_module(spec["name"], spec["args"]), spec
    encoder, meta = load_encoder_with_meta(init, pool_size=pool_size)
    sr = meta.get("sample_rate")
    if sr is not None and int(sr) != int(sample_rate):
        raise ValueError(
            f"{key}: {init} was trained at {sr} Hz but data.sample_rate={sample_rate}; "
            "set data.sample_rate to match the encoder"
        )
    return encoder.train(), {"name": meta["name"], "args": meta["args"]}


def _freeze_weights_and_bn(encoder: nn.Module, k: int) -> None:
    """No gradients for the first ``k`` blocks, and their batch norms kept in eval mode.

    The mode is applied at once: Lightning (2.x) never calls ``train()`` on the module it
    fits (it keeps each submodule's mode), so the encoder's ``train()`` override alone
    would leave the frozen blocks in train mode for the whole run.
    """
    encoder.freeze_blocks(k)
    encoder.train(encoder.training)


def _freeze_weights_only(encoder: nn.Module, k: int) -> None:
    """No gradients for the first ``k`` blocks; their batch norms follow the module's mode.

    In training they normalise with batch statistics and keep updating their running
    statistics, as VCMR's stage 2 does (it sets ``requires_grad = False`` and nothing else).
    """
    blocks = list(encoder.blocks)
    if not 0 <= k <= len(blocks):
        raise ValueError(f"model.freeze_blocks: cannot freeze {k} blocks of {len(blocks)}")
    for block in blocks[:k]:
        for p in block.parameters():
            p.requires_grad_(False)


#: ``model.frozen_bn`` -> how the first ``model.freeze_blocks`` audio blocks are frozen.
FROZEN_BN: Dict[str, Callable[[nn.Module, int], None]] = {
    "eval": _freeze_weights_and_bn,
    "train": _freeze_weights_only,
}


def build_music_video_model(model_cfg: Mapping[str, Any], sample_rate: int, audio_length: int) -> MusicVideoModel:
    """The joint model of a stage-2 ``model:`` block.

    Keys used: ``audio_init``, ``audio_encoder`` (``{name, args}``), ``freeze_blocks``,
    ``frozen_bn`` (``eval``: the frozen blocks' batch norms keep their statistics, the
    default when the key is absent; ``train``: they keep updating them, as VCMR),
    ``video_encoder`` (a name) with its arguments in ``video_encoders``, and ``projection``
    (``hidden_dim``, ``out_dim``) for both heads.

    Raises:
        ValueError: the encoder's input length differs from ``audio_length`` (``data.audio_length``).
    """
    audio_encoder, audio_spec = build_audio_encoder(model_cfg["audio_init"], model_cfg["audio_encoder"], sample_rate)
    input_length = int(audio_encoder.input_length)
    if input_length != int(audio_length):
        raise ValueError(f"data.audio_length={audio_length} but the audio encoder takes {input_length} samples")
    video_spec = pick(str(model_cfg["video_encoder"]), model_cfg["video_encoders"], "model.video_encoder")
    video_encoder = build_module(video_spec["name"], video_spec["args"])
    steps = getattr(video_encoder, "steps", None)  # encoders built for a fixed clip length
    seconds = max(1, round(int(audio_length) / int(sample_rate)))  # the stage-2 data's rule
    if steps is not None and int(steps) != seconds:
        raise ValueError(
            f"model.video_encoders.{video_spec['name']}.steps={steps} but a crop of data.audio_length="
            f"{audio_length} samples at {sample_rate} Hz is paired with {seconds} seconds of video features"
        )
    proj = to_container(model_cfg["projection"])
    spec = {
        "audio_encoder": audio_spec,
        "video_encoder": video_spec,
        "audio_projector": projection_spec(audio_encoder.output_dim, proj),
        "video_projector": projection_spec(video_encoder.output_dim, proj),
    }
    model = MusicVideoModel(
        audio_encoder,
        video_encoder,
        build_module(spec["audio_projector"]["name"], spec["audio_projector"]["args"]),
        build_module(spec["video_projector"]["name"], spec["video_projector"]["args"]),
        spec=spec,
    )
    frozen_bn = str(model_cfg.get("frozen_bn", "eval"))
    if frozen_bn not in FROZEN_BN:
        raise ValueError(f"model.frozen_bn: must be one of {sorted(FROZEN_BN)}, got '{frozen_bn}'")
    if int(model_cfg["freeze_blocks"]) > 0:
        FROZEN_BN[frozen_bn](model.audio_encoder, int(model_cfg["freeze_blocks"]))
    return model


__all__ = [
    "FROZEN_BN",
    "SCRATCH",
    "build_audio_encoder",
    "build_component",
    "build_joint_model",
    "build_music_video_model",
    "component_spec",
    "pick",
]
