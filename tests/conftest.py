"""Shared test fixtures: tiny data and models, all offline and seeded."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable


@pytest.fixture(autouse=True)
def _few_threads():
    """Tests share two cores with each other's subprocesses."""
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def digits_npz(tmp_path_factory) -> Path:
    from sparsenets import data

    return data.prepare("digits", tmp_path_factory.mktemp("data") / "digits.npz")
