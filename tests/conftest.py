"""Fixtures shared by the test modules."""

import pytest
import torch


@pytest.fixture
def one_thread():
    """Run a test on one intra-op thread.

    Modules whose tensors are tiny use it: a second thread only adds synchronization, and on a 2-core machine
    shared with other processes a parallel region can stall for seconds. The kernel's own tests keep the
    default threads, so its parallel path stays covered.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
