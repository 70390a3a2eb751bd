import pytest


@pytest.fixture(autouse=True)
def convscope_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """Every test gets its own cache and catalog, never the user's."""
    home = tmp_path_factory.mktemp("convscope-home")
    monkeypatch.setenv("CONVSCOPE_HOME", str(home))
    return home
