"""The paper's baselines beside SEARLE, in the same harness: same features, prompts, rankings, metrics."""
