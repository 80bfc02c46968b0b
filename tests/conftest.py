"""Fixtures shared by every test: deterministic torch, one thread, no leaked process groups."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
import torch.distributed as dist


@pytest.fixture(autouse=True)
def _deterministic_torch():
    """Seed every RNG, run torch on one thread, and fail a test that leaves a process group.

    One thread keeps the unit set fast on small machines and makes float results independent of
    the core count (the distributed workers also run one thread each).
    """
    threads = torch.get_num_threads()
    torch.manual_seed(0)
    random.seed(0)
    np.random.seed(0)
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
        pytest.fail("the test left a torch.distributed process group initialised: "
                    "call destroy_process_group() (after a barrier) in a finally block")
