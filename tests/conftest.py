import os
import sys
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))  # train_net.py and tools/ are scripts, not packages

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def datasets_root(tmp_path_factory) -> Path:
    """A private $DETECTRON2_DATASETS for the test session (synthetic data is generated there)."""
    root = Path(os.environ.get("ONESTAGE_TEST_DATASETS", tmp_path_factory.mktemp("datasets")))
    os.environ["DETECTRON2_DATASETS"] = str(root)
    return root
