"""What a run hands to people: the results table, the paper's numbers beside ours, server files.

- :mod:`.comparison`: every method on one benchmark (the loop of ``searle table`` and notebook 4).
- :mod:`.table`: its rows, as CSV, Markdown and text.
- :mod:`.paper_numbers`: the paper's reported numbers, as data, and ours placed beside them.
- :mod:`.submission`: prediction files for the CIRR and CIRCO evaluation servers.
"""
