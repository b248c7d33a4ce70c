"""Jobs: what computes and stores above the core: a method evaluated with its trained networks (cached
artifacts), the resumable run folders of ``searle oti``, ``train-phi`` and ``phrases generate``, tokens
made elsewhere as inputs."""

from searle_core.jobs.oti_run import OTIRunConfig, load_oti_run, run_oti
from searle_core.jobs.run_folder import read_manifest

__all__ = ["OTIRunConfig", "load_oti_run", "read_manifest", "run_oti"]
