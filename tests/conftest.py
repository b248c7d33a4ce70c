import logging
from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real annotation files not found at {SHARED_DATA} (the ../shared/data folder beside the repo)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def random_backbone():
    """The shapes-clip architecture with random weights: a real open_clip CLIP, built from its config."""
    from searle_core.backbone import load_backbone

    logging.getLogger().setLevel(logging.ERROR)
    torch.manual_seed(0)
    return load_backbone("shapes-clip", pretrained=None, device="cpu")
