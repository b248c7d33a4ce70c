"""Repository tools beside the library: `python -m tools.annotations` fetches the annotation files the tests read."""
