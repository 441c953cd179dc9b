"""pymsteams, the Python library for Microsoft Teams' connector cards, against the gateway.

Pointed at a hook's URL as its Teams webhook, its MessageCard (title, text, a section of facts,
a link button) reaches the hook's channel, read as Teams shows it. Its synchronous client takes
any 2xx; its asynchronous one only what Teams' connector answered, `200` with the body `1`. A
wrong secret is a failure it raises.
"""

import asyncio
import os
import uuid

import pymsteams
import pytest


@pytest.fixture()
def hook_url(base_url) -> str:
    secret = os.environ.get("GATEWAY_APPRISE_HOOK_SECRET")
    if not secret:
        pytest.fail("GATEWAY_APPRISE_HOOK_SECRET is not set: run through tests/e2e/run.sh", pytrace=False)
    return f"{base_url}/hooks/apprise/{secret}"


def _card(card: pymsteams.connectorcard, marker: str) -> pymsteams.connectorcard:
    card.title(f"Deploy {marker}")
    card.text("web-1 is **down**")
    card.color("red")
    section = pymsteams.cardsection()
    section.activityTitle("Monitoring")
    section.addFact("Host", "web-1")
    card.addSection(section)
    card.addLinkButton("Open", f"https://ci.example/{marker}")
    return card


def test_pymsteams_card_is_posted_as_teams_shows_it(hook_url, posted_in_general):
    marker = uuid.uuid4().hex[:8]
    card = _card(pymsteams.connectorcard(hook_url), marker)
    assert card.send()
    assert card.last_http_response.status_code == 200
    assert posted_in_general(marker)["message"] == (
        f"🔴 Deploy {marker}\nweb-1 is **down**\nMonitoring\nHost: web-1\n"
        f"<https://ci.example/{marker}|Open>"
    )


def test_pymsteams_async_client_gets_the_connectors_answer(hook_url, posted_in_general):
    marker = uuid.uuid4().hex[:8]
    card = _card(pymsteams.async_connectorcard(hook_url), marker)
    # It raises unless the answer is `200` and exactly `1`.
    assert asyncio.run(card.send())
    assert posted_in_general(marker)["message"].startswith(f"🔴 Deploy {marker}\n")


def test_a_wrong_secret_is_a_failure_pymsteams_raises(hook_url):
    card = pymsteams.connectorcard(hook_url.rsplit("/", 1)[0] + "/not-the-secret")
    card.text("never posted")
    with pytest.raises(pymsteams.TeamsWebhookException):
        card.send()
