"""python-telegram-bot, the Python library for Telegram's Bot API, against the gateway.

With the gateway's `/telegram/bot` as its base URL and a hook's secret as the bot token (as Home
Assistant's Telegram bot uses it), its `get_me`, `get_chat` and `send_message` succeed: it parses
each answer into its `User`, `ChatFullInfo` and `Message`, so the answers must have Telegram's
shape. The message reaches the hook's channel as Telegram shows its HTML. A wrong token is the
error it raises for one.
"""

import asyncio
import os
import uuid

import pytest
import telegram


@pytest.fixture()
def secret() -> str:
    value = os.environ.get("GATEWAY_APPRISE_HOOK_SECRET")
    if not value:
        pytest.fail("GATEWAY_APPRISE_HOOK_SECRET is not set: run through tests/e2e/run.sh", pytrace=False)
    return value


def _bot(base_url: str, token: str) -> telegram.Bot:
    return telegram.Bot(token, base_url=f"{base_url}/telegram/bot")


def test_python_telegram_bot_sends_through_the_hook(base_url, posted_in_general, secret):
    marker = uuid.uuid4().hex[:8]

    async def run() -> telegram.Message:
        async with _bot(base_url, secret) as bot:
            me = await bot.get_me()
            assert me.is_bot and me.username == "apprise_bot"
            chat = await bot.get_chat(-1001234567890)
            assert chat.id == -1001234567890
            return await bot.send_message(
                chat_id=-1001234567890,
                text=f"<b>Backup</b> {marker} done &amp; <a href=\"https://nas.example/{marker}\">logged</a>",
                parse_mode="HTML",
            )

    message = asyncio.run(run())
    assert message.message_id > 0
    post = posted_in_general(marker)
    assert post["message"] == f"Backup {marker} done & <https://nas.example/{marker}|logged>"


def test_a_wrong_token_is_the_error_python_telegram_bot_raises(base_url):
    async def run() -> None:
        async with _bot(base_url, "123:not-the-secret") as bot:
            await bot.send_message(chat_id=1, text="never posted")

    with pytest.raises(telegram.error.InvalidToken):
        asyncio.run(run())
