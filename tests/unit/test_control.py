"""The launcher's control channel and the process table `consort status` prints."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from rich.console import Console

from consort.dev import control
from consort.dev.control import ControlServer
from consort.dev.observe import duration, process_table


def test_status_and_added_routes_are_served_on_loopback(tmp_path: Path) -> None:
    server = ControlServer(tmp_path, lambda: {"processes": []})
    server.route("POST", "/scale", lambda body: (202, {"app": body["app"], "n": body["n"]}))
    url = server.start()
    try:
        assert url.startswith("http://127.0.0.1:")
        assert control.call(tmp_path, "GET", "/status") == {"processes": []}
        assert control.call(tmp_path, "POST", "/scale", {"app": "nlp", "n": 2}) == {
            "app": "nlp",
            "n": 2,
        }
        assert httpx.get(f"{url}/nope").status_code == 404
    finally:
        server.stop()
    with pytest.raises(FileNotFoundError, match="is Consort running"):
        control.control_url(tmp_path)


def test_process_table_says_state_restarts_last_exit_and_uptime() -> None:
    row = {
        "name": "nlp-daprd",
        "group": "nlp",
        "state": "crash-looping",
        "restarts": 3,
        "last_exit_code": -9,
        "last_exit_at": 1000.0,
        "uptime_s": 75.0,
        "pid": 4242,
    }
    console = Console(width=200, record=True)
    console.print(process_table([row], now=1012.0))
    text = console.export_text()
    assert "crash-looping" in text
    assert "code -9, 12 s ago" in text
    assert "1 min 15 s" in text
    assert "4242" in text
    assert duration(None) == "-" and duration(7300) == "2 h 01 min"
