import os

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(scope="session")
def broker(tmp_path_factory):
    """One embedded tansu broker for the whole session (tests use their own topics)."""
    from voicetone.broker import EmbeddedBroker

    b = EmbeddedBroker(log_path=str(tmp_path_factory.mktemp("broker") / "tansu.log")).start()
    try:
        yield b
    finally:
        b.stop()
