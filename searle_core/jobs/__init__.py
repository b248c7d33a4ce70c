"""Jobs: what computes and stores, above the core.

- :mod:`.evaluation`: a method end to end (its network trained or loaded first, then the pipeline).
- :mod:`.artifacts`: the cache of trained networks and OTI targets, keyed by all that determines them.
- :mod:`.oti_run`, :mod:`.phi_run`, :mod:`.phrase_run`: ``searle oti``, ``train-phi``, ``phrases generate``
  in run folders (:mod:`.run_folder`), resumable and sharded over ranks.
- :mod:`.authors_oti`: tokens made elsewhere (the authors' code, another run), as inputs.
- :mod:`.bench`, :mod:`.reference_oti`: ``searle bench`` and the reference OTI it times the library against.
"""

from searle_core.jobs.oti_run import OTIRunConfig, OTIRunFolder, load_oti_run, run_oti
from searle_core.jobs.run_folder import code_version, read_manifest

__all__ = ["OTIRunConfig", "OTIRunFolder", "code_version", "load_oti_run", "read_manifest", "run_oti"]
