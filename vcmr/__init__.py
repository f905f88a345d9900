"""vcmr: music representations learned from music videos, and music-video matching."""

__version__ = "0.1.0"


def load_encoder(path, pool_size: int = 3, strict: bool = True):
    """Load a music encoder from a vcmr export, a CLMR or a VCMR checkpoint.

    See :mod:`vcmr.models.export` for the accepted layouts and key mapping.
    """
    from vcmr.models.export import load_encoder as _load

    return _load(path, pool_size=pool_size, strict=strict)


def save_encoder(path, module, name, args, extra=None):
    """Export an encoder (weights + constructor config) to ``.safetensors``."""
    from vcmr.models.export import save_encoder as _save

    return _save(path, module, name, args, extra)


def load_model(path):
    """Load a joint music-video model (stage-2 export file, run folder or its ``export/`` folder).

    Returns a :class:`vcmr.models.joint.MusicVideoModel` in eval mode with
    ``encode_audio`` / ``encode_video``; no Lightning import.
    """
    from vcmr.models.export import load_model as _load

    return _load(path)


#: Public names imported on first use: ``vcmr.<name>`` -> the module that defines it.
_LAZY = {"Embedder": "vcmr.retrieval.embedder"}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'vcmr' has no attribute {name!r}")
