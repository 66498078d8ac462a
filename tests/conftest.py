import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # test helpers such as probe_fixtures

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory):
    """A prepared tiny synthetic corpus (48 short subjects, ~25 min of EEG) and the base
    run config over it:
    (folder, path of base.yaml). Built once per test session."""
    from search_fixtures import prepare, write_base_config

    folder = tmp_path_factory.mktemp("tiny")
    config = write_base_config(folder)
    prepare(config)
    return folder, config
