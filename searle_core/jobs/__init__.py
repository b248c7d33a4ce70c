"""Jobs: what computes and stores, above the core: dataset-scale runs (resumable, on one process or
under torchrun) and the cache of trained networks.

- :mod:`.oti_run`: ``searle oti``, OTI over a dataset, checkpointed and resumable, sharded over ranks.
- :mod:`.phi_run`: ``searle train-phi``, φ from an OTI run's tokens with per-epoch validation.
- :mod:`.run_folder`: the run manifest (hyper-parameters, code version, sessions) and its chunks.
- :mod:`.trained`: trained networks and token sets (φ, Pic2Word, PALAVRA, OTI targets), cached by name.
- :mod:`.authors_oti`, :mod:`.reference_tokens`: tokens written by the authors' code, as inputs.
"""

from searle_core.infra.files import atomic_save, atomic_write_json
from searle_core.jobs.oti_inputs import RunInputs
from searle_core.jobs.oti_run import OTIRunConfig, OTIRunResult, load_oti_run, run_oti
from searle_core.jobs.run_folder import code_version, read_manifest

__all__ = [
    "OTIRunConfig",
    "OTIRunResult",
    "RunInputs",
    "atomic_save",
    "atomic_write_json",
    "code_version",
    "load_oti_run",
    "read_manifest",
    "run_oti",
]
