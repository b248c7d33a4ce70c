"""What a run hands to people: the results table (:mod:`.table`), the paper's numbers beside ours
(:mod:`.paper_numbers`) and prediction files for the CIRR and CIRCO evaluation servers (:mod:`.submission`)."""
