"""Shared fixtures."""

import pytest
import torch


@pytest.fixture
def one_thread():
    """Run the test with torch on one thread (training tests are then exact and not starved)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
