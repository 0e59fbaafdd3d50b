import os, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@pytest.fixture(scope="session")
def root(): return ROOT


def fabguard_cmd(*args):
    "The `fabguard` console script of this interpreter's environment, with arguments."
    return [str(BIN / "fabguard"), *map(str, args)]
