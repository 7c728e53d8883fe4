"""The server's GIL switch interval (ServerConfig.gil_switch_interval_ms): set while serving, put back after."""

from __future__ import annotations

import sys

import pytest

from kuamo.engine.errors import InvalidInput
from kuamo.server.app import gil_switch_interval
from kuamo.server.config import ServerConfig, validate


def test_gil_switch_interval_is_set_while_serving_and_put_back() -> None:
    before = sys.getswitchinterval()
    with gil_switch_interval(ServerConfig().gil_switch_interval_ms):
        assert sys.getswitchinterval() == pytest.approx(0.001)
    assert sys.getswitchinterval() == before
    with gil_switch_interval(0):  # 0 leaves Python's
        assert sys.getswitchinterval() == before
    for bad in (-1.0, float("nan"), 5000.0):
        with pytest.raises(InvalidInput) as exc:
            validate(ServerConfig(gil_switch_interval_ms=bad))
        assert exc.value.field == "gil_switch_interval_ms"
