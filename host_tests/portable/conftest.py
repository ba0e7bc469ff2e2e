import pytest


@pytest.fixture(autouse=True)
def runtime(request):
    """'cpython' or 'micropython': every portable test runs on both."""
    return getattr(request, "param", "cpython")
