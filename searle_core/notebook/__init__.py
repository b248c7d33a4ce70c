"""What only the notebooks (and ``searle paper``, which runs them) call.

- :mod:`.study`: one backbone, one benchmark, its vocabulary and images, opened once.
- :mod:`.inversions`: the inversions notebooks 1-3 share, cached.
- :mod:`.results`: notebook 4's engine: every method on every benchmark and backbone of a profile.
- :mod:`.ablations`: notebook 5's engine: the paper's ablations as named changes.
- :mod:`.explain`: looking inside a pseudo-word (nearest words, word-likeness, what it retrieves).
- :mod:`.interactive`: notebook 1's explorer widget.
- :mod:`.record`: a notebook's key numbers in a JSON beside the executed notebook.
- :mod:`.paper`: ``searle paper``: every notebook in order under a profile, with papermill.
"""
