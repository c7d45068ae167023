"""Shared test settings: keep torch on the two CPU cores, quiet W&B."""

import os

import pytest
import torch

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="module")
def single_thread():
    """One torch thread for a module, restored afterwards. Small renders are dominated by OpenMP hand-offs:
    on a shared 2-core machine a second intra-op thread waits for a time slice per op (100x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
