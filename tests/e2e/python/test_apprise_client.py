"""Apprise's own Synology Chat notifier (`synology://host:port/token`) against the gateway.

Apprise builds Synology Chat's incoming-webhook URL itself
(`/webapi/entry.cgi?api=SYNO.Chat.External&method=incoming&version=2&token=…`) and sends its
payload without URL-encoding it; it judges by the HTTP status alone. Pointed at the gateway with
a hook's secret as the token, its message reaches the hook's channel whole, and a wrong token is
a failure Apprise reports.

Its Mattermost (`mmost://`), Gotify (`gotify://`), ntfy (`ntfy://`) and Matrix (`matrix://`)
notifiers, which take any host, reach the same hook through the gateway's Mattermost-, Gotify-,
ntfy- and Matrix-shaped URLs.
"""

import os
import urllib.parse
import uuid

import apprise
import pytest


@pytest.fixture()
def secret() -> str:
    value = os.environ.get("GATEWAY_APPRISE_HOOK_SECRET")
    if not value:
        pytest.fail("GATEWAY_APPRISE_HOOK_SECRET is not set: run through tests/e2e/run.sh", pytrace=False)
    return value


def _notifier(base_url: str, token: str, path: str = "") -> apprise.Apprise:
    host = urllib.parse.urlsplit(base_url).netloc
    notifier = apprise.Apprise()
    assert notifier.add(f"synology://{host}/{token}{path}"), "Apprise took the synology:// URL"
    return notifier


def test_apprise_posts_through_synology_chats_url(base_url, posted_in_general, secret):
    marker = uuid.uuid4().hex[:8]
    body = f"{marker}: C++ build 50% done & uploaded <https://ci.example/{marker}|log>"
    assert _notifier(base_url, secret).notify(title="CI", body=body)
    post = posted_in_general(marker)
    # Apprise folds the title into the text; the `&` and `+` that DSM itself would lose arrive.
    assert post["message"] == f"CI\r\n{body}"


def test_apprise_with_a_path_prefix_posts_too(base_url, posted_in_general, secret):
    # `synology://host/token/sub` sends `/sub/webapi/entry.cgi` (a NAS behind a proxy's path).
    marker = uuid.uuid4().hex[:8]
    assert _notifier(base_url, secret, "/sub").notify(body=f"prefixed {marker}")
    assert posted_in_general(marker)["message"] == f"prefixed {marker}"


def test_a_wrong_token_is_a_failure_apprise_reports(base_url):
    # Apprise 2 answers an `AppriseResult`, false when the notification failed.
    assert not _notifier(base_url, "not-the-secret").notify(body="never posted")


def _other_notifier(url: str) -> apprise.Apprise:
    notifier = apprise.Apprise()
    assert notifier.add(url), f"Apprise took {url.split('://')[0]}://"
    return notifier


def test_apprise_mattermost_posts_to_the_hook_by_its_secret(base_url, posted_in_general, secret):
    # `mmost://host:port/token` posts Mattermost's JSON to `/hooks/<token>`.
    host = urllib.parse.urlsplit(base_url).netloc
    marker = uuid.uuid4().hex[:8]
    assert _other_notifier(f"mmost://{host}/{secret}").notify(title="Deploy", body=f"mattermost {marker} & 100%")
    assert posted_in_general(marker)["message"] == f"Deploy\nmattermost {marker} & 100%"


def test_apprise_gotify_posts_to_the_hook_as_its_server(base_url, posted_in_general, secret):
    # `gotify://host:port/<path>/token` posts to `<path>/message` with `X-Gotify-Key` and
    # counts any answer but 200 as a failure.
    host = urllib.parse.urlsplit(base_url).netloc
    marker = uuid.uuid4().hex[:8]
    assert _other_notifier(f"gotify://{host}/hooks/apprise/{secret}").notify(title="Backup", body=f"gotify {marker}")
    assert posted_in_general(marker)["message"] == f"Backup\ngotify {marker}"
    assert not _other_notifier(f"gotify://{host}/hooks/apprise/not-the-secret").notify(body="never posted")


def test_apprise_ntfy_publishes_to_the_hook_as_its_topic(base_url, posted_in_general, secret):
    # `ntfy://user:password@host:port/topic` posts ntfy's JSON (`topic`, `title`, `message`) to
    # the server's root with Basic credentials; the hook's name is the topic.
    host = urllib.parse.urlsplit(base_url).netloc
    marker = uuid.uuid4().hex[:8]
    assert _other_notifier(f"ntfy://someone:{secret}@{host}/apprise").notify(title="Disk", body=f"ntfy {marker} 95%")
    assert posted_in_general(marker)["message"] == f"Disk\nntfy {marker} 95%"
    assert not _other_notifier(f"ntfy://someone:not-the-secret@{host}/apprise").notify(body="never posted")


def test_apprise_matrix_posts_to_the_hook_as_its_room(base_url, posted_in_general, secret):
    # `matrix://token@host:port/#room` asks who the token is, joins the room and sends to the
    # room id the join answered (a `PUT` with a transaction id); it takes only a 200 with JSON.
    # The hook's name is the room, its secret the access token.
    host = urllib.parse.urlsplit(base_url).netloc
    marker = uuid.uuid4().hex[:8]
    assert _other_notifier(f"matrix://{secret}@{host}/#apprise").notify(title="Disk", body=f"matrix {marker} 95%")
    assert posted_in_general(marker)["message"] == f"# Disk\nmatrix {marker} 95%"
    # Its HTML is read as HTML: the title a line of its own, the tags gone.
    marker = uuid.uuid4().hex[:8]
    html = _other_notifier(f"matrix://{secret}@{host}/apprise?format=html")
    assert html.notify(title="Disk", body=f"<b>matrix</b> {marker} &amp; 95%", body_format=apprise.NotifyFormat.HTML)
    assert posted_in_general(marker)["message"] == f"Disk\n\nmatrix {marker} & 95%"
    assert not _other_notifier(f"matrix://not-the-secret@{host}/#apprise").notify(body="never posted")
