"""The web chat page of ``mmgraph serve``, driven in headless Chromium: attach an image, stream a reply with a
generated picture, see it restored from the thread after a reload; a new thread, and a refused medium."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
# MMGRAPH_UPDATE_SCREENSHOTS=1 copies the test's screenshot here (the one docs/serving.md shows).
DOCS_SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "img" / "serving-page.png"
VOCAB_SCREENSHOT = DOCS_SCREENSHOT.with_name("serving-vocabulary.png")

if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
    pytest.skip(
        f"the page test needs Debian's chromium ({CHROMIUM}) and chromedriver ({CHROMEDRIVER})", allow_module_level=True
    )
webdriver = pytest.importorskip("selenium.webdriver", reason="the page test needs selenium")

from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

pytestmark = pytest.mark.integration  # the web page in headless Chromium

QUESTION = "What colour is the shape? Then draw a blue circle."

# Records every value the streaming text node held, so the test can tell tokens arrived one by one.
OBSERVE = """
window.__seen = [];
window.__sendDisabled = [];
new MutationObserver((records) => {
  for (const r of records) {
    if (r.type === 'characterData' && r.target.parentElement &&
        r.target.parentElement.closest('.msg.assistant')) {
      window.__seen.push(r.target.data);
      window.__sendDisabled.push(document.getElementById('send').disabled);
    }
  }
}).observe(document.getElementById('messages'), {subtree: true, characterData: true});
"""

# The last assistant bubble: state, text, and its images (src, loaded width).
LAST_REPLY = """
const replies = document.querySelectorAll('#messages .msg.assistant');
const last = replies[replies.length - 1];
if (!last) return null;
return {
  state: last.dataset.state,
  text: Array.from(last.querySelectorAll('.t'), (t) => t.textContent).join(''),
  error: (last.querySelector('.error') || {}).textContent || null,
  images: Array.from(last.querySelectorAll('img'), (i) => ({src: i.src, width: i.complete ? i.naturalWidth : 0})),
};
"""

CONVERSATION = """
return Array.from(document.querySelectorAll('#messages .msg'), (m) => ({
  role: m.classList.contains('user') ? 'user' : 'assistant',
  text: Array.from(m.querySelectorAll('.t'), (t) => t.textContent).join(''),
  images: Array.from(m.querySelectorAll('img'), (i) => ({src: i.src, width: i.complete ? i.naturalWidth : 0})),
}));
"""


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must not try to download a driver or a browser
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1100,900",
        "--disable-dev-shm-usage",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def open_page(driver, url: str) -> None:
    driver.get(url + "/")
    WebDriverWait(driver, 30).until(lambda d: d.execute_script("return document.documentElement.dataset.ready"))


def attach(driver, path: Path) -> None:
    before = len(driver.find_elements(By.CSS_SELECTOR, "#attachments .chip"))
    driver.find_element(By.ID, "file").send_keys(str(path))
    WebDriverWait(driver, 10).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#attachments .chip")) > before)


def test_chat_streams_a_generated_image_and_restores_the_thread(world_server, browser, tmp_path):
    from tinyworld.world import Picture, encode

    picture = tmp_path / "red-circle.png"
    picture.write_bytes(encode(Picture(colour="red", shape="circle", position="centre", size="large"), 1))

    open_page(browser, world_server.url)
    assert browser.find_element(By.ID, "model-name").text == "tiny-world"
    assert browser.find_element(By.ID, "model-link").get_attribute("href").endswith("/v1/models")
    thread = browser.execute_script("return localStorage.getItem('mmgraph.thread')")
    assert thread and browser.find_element(By.ID, "thread-id").get_attribute("title") == thread

    attach(browser, picture)
    chip = browser.find_element(By.CSS_SELECTOR, "#attachments .chip")
    assert "red-circle.png" in chip.text and chip.get_attribute("data-kind") == "image"
    box = browser.find_element(By.ID, "input")
    box.send_keys(QUESTION)
    browser.execute_script(OBSERVE)
    box.send_keys(Keys.ENTER)  # Enter sends

    # the user's turn shows at once, with the attached picture; the composer empties
    WebDriverWait(browser, 10).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#messages .msg.user img"))
    assert browser.find_element(By.CSS_SELECTOR, "#messages .msg.user .t").text == QUESTION
    assert box.get_attribute("value") == "" and not browser.find_elements(By.CSS_SELECTOR, "#attachments .chip")

    def replied(driver):
        reply = driver.execute_script(LAST_REPLY)
        if not reply or reply["state"] == "streaming":
            return False
        return reply

    reply = WebDriverWait(browser, 120, poll_frequency=0.2).until(replied)
    assert reply["state"] == "done", reply
    assert "red" in reply["text"], reply
    WebDriverWait(browser, 15).until(
        lambda d: any("/v1/artifacts/" in i["src"] and i["width"] > 0 for i in d.execute_script(LAST_REPLY)["images"])
    )
    assert not browser.find_element(By.ID, "send").is_enabled()  # idle again, and nothing to send
    assert not browser.find_element(By.ID, "stop").is_displayed()

    # the tokens arrived one by one: the text node held shorter prefixes of the final text on the way
    stats = browser.execute_script("return window.mmgraphStats")
    assert stats["chunks"] > 1 and stats["progress"] > 0 and stats["parts"] >= 1, stats
    seen = [s for s in browser.execute_script("return window.__seen") if s]
    final = reply["text"]
    partial = [s for s in seen if len(s) < len(final.rstrip()) and final.startswith(s)]
    assert len(partial) > 1, (seen, final)
    assert all(browser.execute_script("return window.__sendDisabled")), "send must be disabled while streaming"

    shot = tmp_path / "page.png"
    assert browser.save_screenshot(str(shot))
    data = shot.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 10_000
    if os.environ.get("MMGRAPH_UPDATE_SCREENSHOTS"):  # refresh the picture in docs/serving.md
        shutil.copyfile(shot, DOCS_SCREENSHOT)

    # a reload restores the conversation from GET /v1/threads/{id}
    browser.refresh()
    WebDriverWait(browser, 30).until(lambda d: d.execute_script("return document.documentElement.dataset.ready"))
    assert browser.execute_script("return localStorage.getItem('mmgraph.thread')") == thread

    def restored(driver):
        turns = driver.execute_script(CONVERSATION)
        if len(turns) != 2 or not all(i["width"] > 0 for t in turns for i in t["images"]):
            return False
        return turns

    user, assistant = WebDriverWait(browser, 15).until(restored)
    assert user["role"] == "user" and user["text"] == QUESTION and len(user["images"]) == 1
    assert "/v1/artifacts/" in user["images"][0]["src"]
    assert assistant["role"] == "assistant" and "red" in assistant["text"]
    assert any("/v1/artifacts/" in i["src"] for i in assistant["images"])
    assert assistant["text"] == final


def test_new_thread_and_a_refused_medium(world_server, browser, tmp_path):
    open_page(browser, world_server.url)
    old = browser.execute_script("return localStorage.getItem('mmgraph.thread')")
    browser.find_element(By.ID, "new-thread").click()
    new = browser.execute_script("return localStorage.getItem('mmgraph.thread')")
    assert new != old and browser.execute_script("return /^[A-Za-z0-9_.:-]{1,128}$/.test(arguments[0])", new)
    assert not browser.find_elements(By.CSS_SELECTOR, "#messages .msg")
    assert browser.find_element(By.ID, "empty").is_displayed()
    # an empty conversation shows what the model can be asked; an example fills the message box
    vocab = browser.find_element(By.ID, "vocab")
    assert vocab.is_displayed() and "square" in vocab.text and "sawtooth" in vocab.text
    if os.environ.get("MMGRAPH_UPDATE_SCREENSHOTS"):  # the picture in docs/serving.md
        browser.save_screenshot(str(VOCAB_SCREENSHOT))
    example = vocab.find_element(By.CSS_SELECTOR, ".examples .btn")
    browser.execute_script(
        "arguments[0].scrollIntoView({block: 'center', behavior: 'instant'})", example
    )  # below the fold if small
    example.click()
    assert browser.find_element(By.ID, "input").get_attribute("value") == example.text.split(" (")[0]
    toggle = browser.find_element(By.ID, "vocab-toggle")
    toggle.click()
    assert not vocab.is_displayed() and toggle.get_attribute("aria-expanded") == "false"
    toggle.click()
    assert vocab.is_displayed()
    browser.find_element(By.ID, "input").clear()

    broken = tmp_path / "broken.png"  # a .png that is no PNG: the server refuses it with a 400 before the model runs
    broken.write_bytes(b"this is not an image at all" * 4)
    attach(browser, broken)
    box = browser.find_element(By.ID, "input")
    box.send_keys("What is this?")
    browser.find_element(By.ID, "send").click()

    error = WebDriverWait(browser, 30).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, "#messages .msg.assistant .error")
    )[0]
    assert error.text and "image" in error.text.lower(), error.text
    assert error.value_of_css_property("color") != browser.find_element(By.ID, "input").value_of_css_property("color")
    # the refused message comes back to the composer so it can be fixed and sent again
    assert box.get_attribute("value") == "What is this?"
    assert browser.find_elements(By.CSS_SELECTOR, "#attachments .chip")
    assert browser.find_element(By.ID, "send").is_enabled()
    # nothing reached the thread
    browser.refresh()
    WebDriverWait(browser, 30).until(lambda d: d.execute_script("return document.documentElement.dataset.ready"))
    assert browser.execute_script("return localStorage.getItem('mmgraph.thread')") == new
    assert not browser.find_elements(By.CSS_SELECTOR, "#messages .msg")
