"""Shared fixtures: the gateway that tests/e2e/run.sh started.

GATEWAY_URL (e.g. http://127.0.0.1:40123) and GATEWAY_KEY (a key with the admin scope) name it.
"""

import os
import time

import httpx
import pytest


def _required(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.fail(f"{name} is not set: run these tests through `bash tests/e2e/run.sh`", pytrace=False)
    return value


@pytest.fixture(scope="session")
def base_url() -> str:
    return _required("GATEWAY_URL").rstrip("/")


@pytest.fixture(scope="session")
def api_key() -> str:
    return _required("GATEWAY_KEY")


@pytest.fixture(scope="session")
def openapi_doc(base_url: str) -> dict:
    response = httpx.get(f"{base_url}/openapi.json", timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture()
def api(base_url: str, api_key: str):
    """An httpx client for /api/v1 with the bearer key."""
    with httpx.Client(
        base_url=f"{base_url}/api/v1",
        headers={"Authorization": f"Bearer {api_key}"},
        timeout=10,
    ) as client:
        yield client


@pytest.fixture()
def anon(base_url: str):
    """An httpx client without any key."""
    with httpx.Client(base_url=base_url, timeout=10) as client:
        yield client


@pytest.fixture()
def channel_id(api) -> int:
    """A channel the gateway's account has joined and can post to (public or private)."""
    response = api.get("/channels")
    assert response.status_code == 200, response.text
    channels = response.json()["items"]
    joined = [
        c for c in channels if c.get("is_joined") is not False and c.get("type") in ("public", "private")
    ]
    assert joined, f"no joined public/private channel in {channels!r}"
    return joined[0]["channel_id"]


@pytest.fixture()
def posted_in_general(api):
    """Waits (up to 15 s) for a post in channel `general` whose message holds `text`, and
    returns it: hooks post through the outbox, after their answer."""

    def find(text: str) -> dict:
        channels = api.get("/channels").json()["items"]
        general = next(c for c in channels if c["name"] == "general")
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            listed = api.get(f"/channels/{general['channel_id']}/posts", params={"limit": 50})
            assert listed.status_code == 200, listed.text
            found = [p for p in listed.json()["items"] if text in p["message"]]
            if found:
                return found[0]
            time.sleep(0.2)
        pytest.fail(f"no post with {text!r} in channel general")

    return find
