"""The chat page in real headless Chromium: chat, click ❤️, find the reaction in the store and the export."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path

import pytest
from sqlalchemy import select

from rluf.serve import Arm, ServeConfig, create_app
from rluf.serve.loadtest import ThreadServer, create_users
from rluf.store import connect, reactions, responses
from rluf.store.export import export_store
from tiny_models import make_tiny_policy

CHROMIUM = os.environ.get("RLUF_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("RLUF_CHROMEDRIVER", "/usr/bin/chromedriver")
ADMIN = "browser-admin-token-0123456789"
WAIT_S = 30


@pytest.fixture
def browser(tmp_path):
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium)")
    for path, pkg in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not (Path(path).exists() and os.access(path, os.X_OK)):
            pytest.skip(f"{path} not found: install the Debian package {pkg} (.ci/run does)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                 f"--user-data-dir={tmp_path / 'chromium-profile'}", "--window-size=1000,800"):
        opts.add_argument(flag)
    service = webdriver.ChromeService(executable_path=CHROMEDRIVER, log_output=str(tmp_path / "chromedriver.log"))
    try:
        driver = webdriver.Chrome(options=opts, service=service)
    except Exception as e:  # a broken install is an environment problem, said plainly
        pytest.skip(f"headless Chromium did not start: {type(e).__name__}: {str(e)[:300]}")
    driver.set_page_load_timeout(WAIT_S)
    driver.set_script_timeout(WAIT_S)
    yield driver
    driver.quit()
    shutil.rmtree(tmp_path / "chromium-profile", ignore_errors=True)


def _events(db_url: str, response_id: str) -> list[tuple[str, bool, str]]:
    with connect(db_url).connect() as conn:
        return [tuple(r) for r in conn.execute(
            select(reactions.c.reaction, reactions.c.removed, reactions.c.user_id)
            .where(reactions.c.response_id == response_id).order_by(reactions.c.created_at_ms, reactions.c.id))]


def test_chat_page_heart_reaches_the_store(browser, sqlite_url, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    model = make_tiny_policy(tmp_path / "tiny")
    app = create_app(sqlite_url, [Arm("web", str(model))], ADMIN,
                     ServeConfig(rate_per_minute=0, default_max_tokens=8, threads=1))
    with ThreadServer(app) as srv:
        user = asyncio.run(create_users(srv.base_url, ADMIN, 1))[0]
        wait = WebDriverWait(browser, WAIT_S)
        browser.get(srv.base_url + "/")
        status = browser.find_element(By.ID, "status")

        # A wrong token is refused with the server's message on the page.
        browser.find_element(By.ID, "token").send_keys("not-a-token")
        browser.find_element(By.ID, "input").send_keys("hello there")
        browser.find_element(By.ID, "send").click()
        wait.until(lambda d: "unknown bearer token" in status.text)

        token = browser.find_element(By.ID, "token")
        token.clear()
        token.send_keys(user["token"])
        browser.find_element(By.ID, "input").send_keys("hello there")
        browser.find_element(By.ID, "send").click()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".assistant button.love"))
        heart = browser.find_element(By.CSS_SELECTOR, ".assistant button.love")
        assert heart.text == "❤️"
        rid = heart.get_attribute("data-response-id")
        assert rid.startswith("chatcmpl-")

        heart.click()
        wait.until(lambda d: heart.get_attribute("aria-pressed") == "true")
        assert _events(sqlite_url, rid) == [("love", False, user["user_id"])]

        heart.click()  # a second click withdraws the heart
        wait.until(lambda d: heart.get_attribute("aria-pressed") == "false")
        assert _events(sqlite_url, rid) == [("love", False, user["user_id"]), ("love", True, user["user_id"])]
        heart.click()
        wait.until(lambda d: heart.get_attribute("aria-pressed") == "true")

        # The page continues the same conversation.
        browser.find_element(By.ID, "input").send_keys("tell me about the sky")
        browser.find_element(By.ID, "send").click()
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".assistant button.love")) == 2)
        assert status.text == ""

    with connect(sqlite_url).connect() as conn:
        turns = conn.execute(select(responses.c.response_id, responses.c.conversation_id, responses.c.turn_index,
                                    responses.c.user_id, responses.c.policy).order_by(responses.c.turn_index)).all()
    assert [t.turn_index for t in turns] == [0, 1] and turns[0].response_id == rid
    assert turns[0].conversation_id == turns[1].conversation_id and {t.policy for t in turns} == {"web"}
    assert {t.user_id for t in turns} == {user["user_id"]}

    out = export_store(connect(sqlite_url), tmp_path / "export")
    exported = [json.loads(line) for line in Path(out["files"]["reactions"]).open()]
    assert [(e["response_id"], e["reaction"], e.get("removed", False)) for e in exported] == [
        (rid, "love", False), (rid, "love", True), (rid, "love", False)]
