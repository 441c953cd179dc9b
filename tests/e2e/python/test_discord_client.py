"""discord.py's own webhook client against a Discord-format hook.

discord.py builds Discord's URL (`https://discord.com/api/v10/webhooks/<id>/<token>`); the
session here sends its requests to the hook's URL instead, keeping their query, headers and body.
With `wait=True` discord.py reads the answer as a Discord message object: every key it needs
must be there, or it raises after the message was posted (and the caller retries it).
"""

import os
import urllib.parse

import discord
import pytest
import requests


class _ToHook(requests.adapters.HTTPAdapter):
    def __init__(self, hook_url: str):
        super().__init__()
        self.hook_url = hook_url

    def send(self, request, **kwargs):
        query = urllib.parse.urlsplit(request.url).query
        request.url = self.hook_url + (f"?{query}" if query else "")
        return super().send(request, **kwargs)


@pytest.fixture()
def webhook(base_url: str):
    secret = os.environ.get("GATEWAY_DISCORD_HOOK_SECRET")
    if not secret:
        pytest.fail("GATEWAY_DISCORD_HOOK_SECRET is not set: run through tests/e2e/run.sh", pytrace=False)
    session = requests.Session()
    session.mount("https://discord.com/", _ToHook(f"{base_url}/hooks/discord/{secret}"))
    yield discord.SyncWebhook.partial(1, "token", session=session)
    session.close()


def test_send_with_wait_returns_the_posted_message(webhook, api):
    message = webhook.send("deployed **v2** from discord.py", wait=True)
    assert isinstance(message, discord.SyncWebhookMessage)
    assert message.content == "deployed **v2** from discord.py"
    assert message.edited_at is None
    # The message is the Chat post: its id and channel are Chat's.
    channels = api.get("/channels").json()["items"]
    general = next(c for c in channels if c["name"] == "general")
    assert message.channel.id == general["channel_id"]
    listed = api.get(f"/channels/{general['channel_id']}/posts", params={"limit": 50})
    assert listed.status_code == 200, listed.text
    found = [p for p in listed.json()["items"] if p["post_id"] == message.id]
    assert found, f"post {message.id} not in the channel's first page"
    assert found[0]["message"] == "deployed **v2** from discord.py"


def test_send_without_wait_returns_nothing(webhook):
    assert webhook.send("no answer needed") is None
