"""Every method of the tables behind one call: its context, the query features of each method, and
one method run end to end (features -> query features -> rankings -> metrics)."""

from searle_core.methods.context import MethodContext, NetworkSetup
from searle_core.methods.pipeline import MethodResult, gallery_features, run_method
from searle_core.methods.registry import METHODS, query_features

__all__ = [
    "METHODS",
    "MethodContext",
    "MethodResult",
    "NetworkSetup",
    "gallery_features",
    "query_features",
    "run_method",
]
