"""Plain ``nn.Module`` building blocks; none of them knows about training."""

from vcmr.models.registry import MODULES, build_module, register
from vcmr.models.samplecnn import CLMR_ARGS, VCMR_ARGS, SampleCNN

register("samplecnn")(SampleCNN)

# Importing these modules registers their classes ("lstm", "transformer", "projection").
from vcmr.models import projection, video  # noqa: E402,F401

__all__ = ["MODULES", "build_module", "register", "SampleCNN", "VCMR_ARGS", "CLMR_ARGS"]
