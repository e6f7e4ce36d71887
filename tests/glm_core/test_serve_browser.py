"""glm serve's chat page in a real headless browser: Debian's Chromium driven by Selenium (.ci/run installs
both). The page streams answers from the server's own API; Stop ends a long one."""

import shutil

import pytest
from live_server import LiveServer
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

from glm_core.serve import create_app

WAIT = 60  # seconds a page state may take to appear

# Records every text the newest assistant message shows, as the page updates it; with `stop`, clicks the
# page's Stop button as soon as the first text appears (a step of the tiny model takes about a millisecond:
# a click sent from the test would come after the answer).
WATCH_ANSWER = """
const [stopAtFirstText] = arguments;
window.shownTexts = [];
new MutationObserver(() => {
  const answers = document.querySelectorAll(".message.assistant");
  const answer = answers[answers.length - 1];
  if (!answer) return;
  const text = answer.firstChild ? answer.firstChild.textContent : "";
  if (text && window.shownTexts[window.shownTexts.length - 1] !== text) {
    window.shownTexts.push(text);
    if (stopAtFirstText && window.shownTexts.length === 1) document.getElementById("stop").click();
  }
}).observe(document.getElementById("messages"), {childList: true, subtree: true, characterData: true});
"""


@pytest.fixture(scope="module")
def server(chat_model, tokenizer):
    with LiveServer(create_app(chat_model, tokenizer, model_name="glm-tiny")) as live:
        yield live


@pytest.fixture(scope="module")
def browser():
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or driver is None:
        pytest.fail("Debian's chromium and chromium-driver are needed (.ci/run installs them: "
                    "apt-get install -y chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1000,700"):
        options.add_argument(argument)
    browser = webdriver.Chrome(service=Service(driver), options=options)
    yield browser
    browser.quit()


@pytest.fixture
def page(server, browser):
    browser.get(server.url)
    WebDriverWait(browser, WAIT).until(lambda b: b.find_element(By.ID, "status").text == "model: glm-tiny")
    temperature = browser.find_element(By.ID, "temperature")
    temperature.clear()
    temperature.send_keys("0")  # greedy, to compare with model.chat
    return browser


def ask(browser, question: str) -> None:
    prompt = browser.find_element(By.ID, "prompt")
    prompt.send_keys(question)
    prompt.send_keys(Keys.ENTER)


def last_answer(browser):
    return browser.find_elements(By.CSS_SELECTOR, ".message.assistant")[-1]


def wait_for_state(browser, answer, *states) -> str:
    WebDriverWait(browser, WAIT).until(lambda _: answer.get_attribute("data-state") in states)
    return answer.get_attribute("data-state")


def test_the_streamed_answer_appears_and_equals_chat(page, server, chat_model, tokenizer):
    question = "请介绍一下华为"
    expected = chat_model.chat(tokenizer, question, do_sample=False)[0]
    page.execute_script(WATCH_ANSWER, False)
    ask(page, question)
    answer = last_answer(page)
    assert wait_for_state(page, answer, "done", "error", "stopped") == "done"
    assert answer.text == expected
    shown = page.execute_script("return window.shownTexts")
    assert len(shown) > 1  # the answer grew on the page, piece by piece
    assert all(expected.startswith(text) for text in shown) and shown[-1] == expected
    assert [m.text for m in page.find_elements(By.CSS_SELECTOR, ".message.user")] == [question]


def test_history_carries_to_the_next_question_and_clear_empties_it(page, server, chat_model, tokenizer):
    first, second = "你好", "请介绍一下华为"
    page.find_element(By.ID, "max-tokens").send_keys("24")  # two rounds must fit the tiny model's 256 tokens
    ask(page, first)
    assert wait_for_state(page, last_answer(page), "done") == "done"
    reply = last_answer(page).text
    ask(page, second)
    answer = last_answer(page)
    assert wait_for_state(page, answer, "done") == "done"
    server.wait_idle()
    assert answer.text == chat_model.chat(tokenizer, second, [(first, reply)], max_new_tokens=24, do_sample=False)[0]
    page.find_element(By.ID, "clear").click()
    assert page.find_elements(By.CSS_SELECTOR, ".message") == []
    ask(page, second)  # asked afresh: no history any more
    assert wait_for_state(page, last_answer(page), "done") == "done"
    server.wait_idle()
    assert last_answer(page).text == chat_model.chat(tokenizer, second, max_new_tokens=24, do_sample=False)[0]


def test_stop_ends_a_long_answer_and_frees_the_model(page, server, chat_model, tokenizer):
    question = "你好"
    full = chat_model.chat(tokenizer, question, do_sample=False)[0]
    assert chat_model.generation_stats.new_tokens == chat_model.config.seq_length - 5  # fills the context
    page.execute_script(WATCH_ANSWER, True)
    ask(page, question)
    answer = last_answer(page)
    assert wait_for_state(page, answer, "stopped", "done", "error") == "stopped"
    partial = page.execute_script("return arguments[0].firstChild.textContent", answer)
    assert partial and full.startswith(partial) and len(partial) < len(full)
    server.wait_idle()
    assert chat_model.generation_stats.new_tokens < chat_model.config.seq_length // 2  # the server stopped too
    assert page.find_element(By.ID, "send").is_enabled()
    ask(page, "请介绍一下华为")  # the model answers the next question
    assert wait_for_state(page, last_answer(page), "done") == "done"


def test_a_refused_question_shows_the_servers_message(page):
    ask(page, "你好" * 300)
    answer = last_answer(page)
    assert wait_for_state(page, answer, "error", "done") == "error"
    assert "maximum context length is 256 tokens" in answer.text
    assert page.find_element(By.ID, "send").is_enabled()
