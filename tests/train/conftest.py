import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The nano models are far too small for intra-op threads to pay off; on a busy machine they cost
    several times the work itself."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
