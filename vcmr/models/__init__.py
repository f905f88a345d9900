"""Plain ``nn.Module`` building blocks; none of them knows about training."""

from vcmr.models.registry import MODULES, build_module
from vcmr.models.samplecnn import CLMR_ARGS, VCMR_ARGS, SampleCNN

__all__ = ["MODULES", "build_module", "SampleCNN", "VCMR_ARGS", "CLMR_ARGS"]
