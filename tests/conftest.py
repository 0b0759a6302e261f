import os

import pytest
import torch

# Small tensors on a 2-core machine: one thread is several times faster and keeps timings stable.
torch.set_num_threads(int(os.environ.get("COUPLED_SDE_TEST_THREADS", "1")))


@pytest.fixture
def f64():
    prev = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(prev)
