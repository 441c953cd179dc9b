"""Reacting to Chat from another language: events over Server-Sent Events (httpx + httpx-sse) and
an HTTP subscription whose signatures are checked with the Standard Webhooks reference library.

Chat is played by this test: it POSTs the form Chat sends to /inbound/e2e with the inbound's
token (tests/e2e/run.sh configures it and exports it as GATEWAY_INBOUND_TOKEN).
"""

import json
import os
import pathlib
import queue
import secrets
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from httpx_sse import connect_sse
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

INBOUND = "e2e"


@pytest.fixture(scope="module")
def inbound_token() -> str:
    token = os.environ.get("GATEWAY_INBOUND_TOKEN")
    if not token:
        pytest.fail("GATEWAY_INBOUND_TOKEN is not set: run through tests/e2e/run.sh", pytrace=False)
    return token


def chat_posts(base_url: str, token: str, text: str) -> httpx.Response:
    """What Chat's outgoing webhook sends when a user posts `text` in channel 2."""
    response = httpx.post(
        f"{base_url}/inbound/{INBOUND}",
        data={
            "token": token,
            "channel_id": "2",
            "channel_name": "general",
            "user_id": "3",
            "username": "alice",
            "post_id": str(secrets.randbelow(10**12) + 1),
            "thread_id": "0",
            "timestamp": str(int(time.time() * 1000)),
            "text": text,
            "trigger_word": text.split()[0],
        },
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return response


def latest_event_id(api) -> int:
    after = 0
    while True:
        page = api.get("/events", params={"after": after, "limit": 1000}).json()
        if not page["items"]:
            return after
        after = page["next_after"]


def test_a_bot_reads_chat_over_sse_and_resumes_with_last_event_id(api, base_url, inbound_token):
    start = latest_event_id(api)
    chat_posts(base_url, inbound_token, "!deploy web")
    stream = httpx.Client(
        base_url=f"{base_url}/api/v1",
        headers={"Authorization": api.headers["Authorization"]},
        timeout=httpx.Timeout(10, read=30),
    )
    seen = []
    with stream, connect_sse(stream, "GET", "/events", params={"after": start, "inbound": INBOUND}) as source:
        assert source.response.headers["content-type"].startswith("text/event-stream")
        # The first arrives from the replay; the second live, while the stream is open.
        threading.Timer(0.5, chat_posts, (base_url, inbound_token, "!deploy api")).start()
        for sse in source.iter_sse():
            if sse.event == "ready":  # the opening block: the resume point as its id and data
                assert json.loads(sse.data) == {"resume": start} and int(sse.id) == start, sse
                continue
            # Heartbeats dispatch nothing, even once an id was seen (no empty `message` events).
            assert sse.data, sse
            event = json.loads(sse.data)
            assert sse.event == event["kind"] == "trigger_word"
            assert int(sse.id) == event["event_id"]
            seen.append(event)
            if len(seen) == 2:
                break
    assert [e["text"] for e in seen] == ["!deploy web", "!deploy api"]
    assert seen[0]["event_id"] < seen[1]["event_id"]
    assert seen[0]["inbound"] == INBOUND and seen[0]["username"] == "alice"

    # A consumer that was gone resumes exactly after the last event it saw.
    chat_posts(base_url, inbound_token, "!deploy db")
    with httpx.Client(
        base_url=f"{base_url}/api/v1",
        headers={"Authorization": api.headers["Authorization"], "Last-Event-ID": str(seen[0]["event_id"])},
        timeout=httpx.Timeout(10, read=30),
    ) as again, connect_sse(again, "GET", "/events", params={"inbound": INBOUND}) as source:
        texts = []
        for sse in source.iter_sse():
            if sse.event == "ready":
                continue
            texts.append(json.loads(sse.data)["text"])
            if len(texts) == 2:
                break
    assert texts == ["!deploy api", "!deploy db"]


class Receiver:
    """A subscriber's HTTP endpoint on a free local port; answers `answer` to every POST."""

    def __init__(self, answer: bytes = b""):
        self.requests: "queue.Queue[tuple[dict, bytes]]" = queue.Queue()
        received, reply = self.requests, answer

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                received.put(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def next(self, timeout: float = 15) -> tuple[dict, bytes]:
        return self.requests.get(timeout=timeout)

    def close(self):
        self.server.shutdown()


def test_a_subscription_delivery_verifies_with_standardwebhooks(api, base_url, inbound_token):
    receiver = Receiver()
    try:
        created = api.post("/subscriptions", json={"url": receiver.url, "inbound": INBOUND})
        assert created.status_code == 201, created.text
        subscription = created.json()
        secret = subscription["secret"]
        assert secret.startswith("whsec_")
        shown = api.get(f"/subscriptions/{subscription['subscription_id']}")
        assert shown.status_code == 200 and "secret" not in shown.json()

        chat_posts(base_url, inbound_token, "!status please")
        headers, body = receiver.next()
        # The reference implementation: raises unless the signature and timestamp are right.
        payload = Webhook(secret).verify(body, headers)
        assert payload["type"] == "chat.trigger_word"
        assert payload["data"]["text"] == "!status please"
        with pytest.raises(WebhookVerificationError):
            Webhook(secret).verify(body.replace(b"please", b"PLEASE"), headers)
        with pytest.raises(WebhookVerificationError):
            Webhook("whsec_" + "A" * 32).verify(body, headers)

        deleted = api.delete(f"/subscriptions/{subscription['subscription_id']}")
        assert deleted.status_code == 204, deleted.text
    finally:
        receiver.close()


def test_a_respond_subscription_answers_chat(api, base_url, inbound_token):
    receiver = Receiver(answer=json.dumps({"text": "pong from Python"}).encode())
    try:
        created = api.post(
            "/subscriptions", json={"url": receiver.url, "inbound": INBOUND, "respond": True}
        )
        assert created.status_code == 201, created.text
        secret = created.json()["secret"]
        answer = chat_posts(base_url, inbound_token, "!ping")
        # Chat posts this body in the channel.
        assert answer.json() == {"text": "pong from Python"}
        headers, body = receiver.next()
        assert Webhook(secret).verify(body, headers)["data"]["text"] == "!ping"
        assert api.delete(f"/subscriptions/{created.json()['subscription_id']}").status_code == 204
    finally:
        receiver.close()


def readme_bot() -> str:
    """The `!ping` bot of the README's "React to Chat" section, exactly as printed there."""
    readme = (pathlib.Path(__file__).resolve().parents[3] / "README.md").read_text()
    start = readme.index("```python\n", readme.index("A bot that answers `!ping`")) + len("```python\n")
    return readme[start : readme.index("```\n", start)]


def test_the_readme_bot_answers_in_the_channel(api, api_key, base_url, inbound_token, channel_id, tmp_path):
    code = readme_bot()
    assert sum(1 for line in code.splitlines() if line.strip()) <= 20, "the README promises 20 lines"
    bot_file = tmp_path / "bot.py"
    bot_file.write_text(code)
    bot = subprocess.Popen(
        [sys.executable, str(bot_file)],
        env={**os.environ, "GATEWAY": base_url, "SYNOCHAT_KEY": api_key},
    )
    try:
        # The bot reads from the moment it connects, so Chat keeps calling until it answers.
        for _ in range(30):
            nonce = secrets.token_hex(4)
            response = httpx.post(
                f"{base_url}/inbound/{INBOUND}",
                data={
                    "token": inbound_token,
                    "channel_id": str(channel_id),
                    "user_id": "3",
                    "username": "alice",
                    "post_id": str(secrets.randbelow(10**12) + 1),
                    "timestamp": str(int(time.time() * 1000)),
                    "text": f"!ping {nonce}",
                    "trigger_word": "!ping",
                },
                timeout=10,
            )
            assert response.status_code == 200, response.text
            time.sleep(1)
            posts = api.get(f"/channels/{channel_id}/posts", params={"limit": 50}).json()["items"]
            if any(p["message"] == f"pong, alice: !ping {nonce}" for p in posts):
                return
            assert bot.poll() is None, "the README bot exited"
        pytest.fail("the README bot never answered")
    finally:
        bot.kill()
        bot.wait()
