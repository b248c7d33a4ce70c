"""Every method of the tables behind one call: its context, the query features of each method, and
one method run end to end (features -> query features -> rankings -> metrics)."""

from searle_core.methods.context import MethodContext
from searle_core.methods.pipeline import MethodResult

__all__ = ["MethodContext", "MethodResult"]
