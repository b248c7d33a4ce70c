"""Long runs over whole datasets: OTI over every image, φ training, on one process or under torchrun.

- :mod:`.oti_run`: ``searle oti``, OTI over a dataset, checkpointed and resumable, sharded over ranks.
- :mod:`.phi_run`: ``searle train-phi``, φ from an OTI run's tokens with per-epoch validation.
- :mod:`.checkpoint`: atomic writes and the run manifest (hyper-parameters, code version, sessions).
- :mod:`.distributed`: the torch.distributed calls, no-ops on a single process.
"""

from .checkpoint import atomic_save, atomic_write_json, code_version, read_manifest
from .oti_run import OTIRunConfig, OTIRunResult, RunInputs, load_oti_run, run_oti

__all__ = ["OTIRunConfig", "OTIRunResult", "RunInputs", "atomic_save", "atomic_write_json", "code_version",
           "load_oti_run", "read_manifest", "run_oti"]
