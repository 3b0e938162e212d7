"""Shared test settings."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _float32_without_tf32():
    """CUDA tests compare float32 results to 1e-5, as on the CPU: no TF32 in convolutions (cuDNN's
    default) or matrix products."""
    if torch.cuda.is_available():
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    yield
