"""nnparity: check, step by step, that hand-written NumPy backprop does what PyTorch does."""

from nnparity.backend import Backend, load_backend
from nnparity.compare import DEFAULT_TOLERANCES, Tolerance
from nnparity.errors import NnparityError
from nnparity.initialization import init_params
from nnparity.optim import SGD
from nnparity.records import LayerParams, StepResult
from nnparity.report import Divergence, Report
from nnparity.spec import NetworkSpec
from nnparity.verify import verify

__all__ = [
    "DEFAULT_TOLERANCES",
    "SGD",
    "Backend",
    "Divergence",
    "LayerParams",
    "NetworkSpec",
    "NnparityError",
    "Report",
    "StepResult",
    "Tolerance",
    "init_params",
    "load_backend",
    "verify",
]
__version__ = "0.1.0"
