"""workers/models: S4/S4D kernels, the prunable SSM layer, blocks and the S4Model backbone."""

from workers.models.backbone import S4Model
from workers.models.s4d import S4DKernel
from workers.models.spec import ModelSpec

__all__ = ["ModelSpec", "S4DKernel", "S4Model"]
