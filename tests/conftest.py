import os
import sys
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))  # train_net.py and tools/ are scripts, not installed packages

# Synthetic datasets are generated on first use and reused (they are a pure function of their seed
# and version); set before any test imports vis_eval.data, which registers them.
os.environ.setdefault("DETECTRON2_DATASETS", str(REPO_ROOT / "datasets"))

torch.set_num_threads(min(2, os.cpu_count() or 1))
