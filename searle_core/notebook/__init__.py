"""What only the notebooks (and ``searle paper``, which runs them) call: :mod:`.study` (one backbone and
benchmark, opened once), :mod:`.inversions` (the cached inversions notebooks share), :mod:`.results` and
:mod:`.ablations` (notebooks 4 and 5's engines), :mod:`.explain` and :mod:`.interactive` (looking inside a
pseudo-word), :mod:`.record` (a notebook's key numbers) and :mod:`.papermill_runner` (``searle paper``).
"""
