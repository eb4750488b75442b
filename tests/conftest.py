"""Shared fixtures."""

import os

import pytest
import torch

from hardening_search import remove_ray_tmp_dirs


@pytest.fixture
def one_thread():
    """Run the test with torch on one thread (training tests are then exact and not starved)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _ray_tmp_dirs_removed():
    """The /tmp/s4r* Ray folders (sockets, logs) that a test's searches used go with the test."""
    yield
    remove_ray_tmp_dirs()


@pytest.fixture(autouse=True, scope="session")
def _data_cache_in_tmp(tmp_path_factory):
    """Searches the tests run (and their Ray workers, which inherit the environment) keep their data
    fingerprints in a folder of this session, not in the user's ~/.cache."""
    if os.environ.get("S4OP_DATA_CACHE"):
        yield
        return
    os.environ["S4OP_DATA_CACHE"] = str(tmp_path_factory.mktemp("data-cache"))
    yield
    os.environ.pop("S4OP_DATA_CACHE", None)
