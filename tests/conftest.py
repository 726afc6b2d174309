import json
from pathlib import Path

import numpy as np
import pytest

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def reference():
    """Outputs of DeepSeek's reference EPLB, computed once with the reference and stored."""
    with open(DATA / "deepseek_reference.json") as fh:
        return json.load(fh)


@pytest.fixture
def small_loads():
    return np.array([[90, 132, 40, 61, 104, 165, 39, 4, 73, 56, 183, 86],
                     [20, 107, 104, 64, 19, 197, 187, 157, 172, 86, 16, 27]], dtype=float)
