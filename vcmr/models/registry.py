"""Explicit registry of the modules a config can name (``name:`` + ``args:``).

Adding a model: write the ``nn.Module`` in its own file under ``vcmr/models/`` and add
one line to :data:`MODULES`.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Mapping

from torch import nn

from vcmr.models.projection import ProjectionHead
from vcmr.models.samplecnn import SampleCNN
from vcmr.models.siamese import RegressionBaseline, SiameseMatcher
from vcmr.models.ut_cmvmr import UTCMVMR
from vcmr.models.video import LSTMFlattenVideoEncoder, LSTMVideoEncoder, TransformerVideoEncoder
from vcmr.models.vmnet import VMNet

#: name -> constructor.
MODULES: Dict[str, Callable[..., nn.Module]] = {
    "samplecnn": SampleCNN,
    "lstm": LSTMVideoEncoder,
    "transformer": TransformerVideoEncoder,
    "projection": ProjectionHead,
    "vmnet": VMNet,
    "siamese": SiameseMatcher,
    "regression": RegressionBaseline,
    "ut_cmvmr": UTCMVMR,
    "lstm_flatten": LSTMFlattenVideoEncoder,
}


def build_module(name: str, args: Mapping[str, Any]) -> nn.Module:
    """Instantiate ``MODULES[name](**args)`` with errors that name the culprit."""
    if name not in MODULES:
        raise KeyError(f"unknown module name '{name}'; known: {sorted(MODULES)}")
    try:
        return MODULES[name](**dict(args))
    except TypeError as exc:
        raise TypeError(f"bad arguments for module '{name}': {exc}") from exc
