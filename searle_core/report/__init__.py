"""What a run hands to people: the results table, the paper's numbers beside ours, server files.

- :mod:`.evaluation`: every method on one benchmark (the loop of ``searle table`` and notebook 4).
- :mod:`.table`: its rows, as CSV and Markdown.
- :mod:`.paper_numbers`: the paper's reported numbers, as data, and ours placed beside them.
- :mod:`.submission`: prediction files for the CIRR and CIRCO evaluation servers.
- :mod:`.server_files`: those files for every method and backbone of a results run.
"""
