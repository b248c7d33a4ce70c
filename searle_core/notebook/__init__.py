"""What only the notebooks (and ``searle paper``, which runs them through :mod:`.papermill_runner`) call:
each notebook's engine, the study and inversions they share, and :mod:`.record` for their key numbers."""
