"""Drive the console's pages in Debian's headless chromium through Selenium (run by /usr/bin/python3, whose
python3-selenium and chromium-driver are Debian's; the test venv has neither). Prints one JSON object of what the
browser saw; tests/test_console_pages.py judges it.

Usage: console_browser.py PORT USERNAME PASSWORD SENDER HOSTILE_SUBJECT
Half-way it prints "WAITING" and reads a line: the test loads a new message meanwhile, and the list, left open,
must show it without a reload.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

PWNED = "return typeof window.pwned === 'undefined' ? 'undefined' : String(window.pwned)"


def browser() -> webdriver.Chrome:
    """Headless chromium; --no-sandbox because the tests run as root.

    A second try when the first start fails: on a loaded machine chromium may miss chromedriver's start-up window
    ("DevToolsActivePort file doesn't exist"), which says nothing about the console.
    """
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1400,1000"):
        options.add_argument(argument)
    try:
        return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    except WebDriverException as problem:
        print(f"chromium did not start ({type(problem).__name__}); trying once more", file=sys.stderr)
        time.sleep(2)
        return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


@contextmanager
def reporting(driver: webdriver.Chrome, seen: dict) -> Iterator[None]:
    """Around a script's steps: add the browser's severe console lines, or on a failed step its error and the page
    so far; close the browser on every path; print what was seen as one JSON object (the test judges it)."""
    try:
        yield
        seen["console_errors"] = [entry["message"] for entry in driver.get_log("browser")
                                  if entry.get("level") == "SEVERE"]
    except Exception as problem:  # reported to the test with what was seen so far
        seen["error"] = f"{type(problem).__name__}: {problem}"
        seen["page"] = driver.page_source[:3000]
    finally:
        driver.quit()
        print(json.dumps(seen), flush=True)


def main() -> int:
    port, username, password, sender, hostile = sys.argv[1:6]
    base = f"http://127.0.0.1:{port}"
    seen: dict = {}
    driver = browser()
    wait = WebDriverWait(driver, 60)  # a loaded CI machine, not a speed test
    with reporting(driver, seen):
        driver.get(base + "/")
        seen["anonymous_url"] = driver.current_url
        driver.find_element(By.ID, "id_username").send_keys(username)
        driver.find_element(By.ID, "id_password").send_keys(password)
        driver.find_element(By.ID, "login").click()
        wait.until(expected_conditions.presence_of_element_located((By.ID, "messages")))
        seen["after_login_url"] = driver.current_url
        seen["list_subjects"] = [cell.text for cell in driver.find_elements(By.CSS_SELECTOR, "#messages td.subject")]
        seen["list_pwned"] = driver.execute_script(PWNED)

        driver.find_element(By.ID, "sender").send_keys(sender)
        driver.find_element(By.ID, "search").click()
        wait.until(expected_conditions.url_contains("sender="))
        rows = driver.find_elements(By.CSS_SELECTOR, "#messages tr")
        seen["search_senders"] = [row.find_elements(By.TAG_NAME, "td")[2].text for row in rows]
        seen["search_subjects"] = [row.find_element(By.CSS_SELECTOR, "td.subject").text for row in rows]

        link = next(cell for cell in driver.find_elements(By.CSS_SELECTOR, "#messages td.subject a")
                    if cell.text == hostile)
        link.click()
        wait.until(expected_conditions.presence_of_element_located((By.ID, "record")))
        seen["message_url"] = driver.current_url
        seen["subject"] = driver.find_element(By.ID, "subject").text
        seen["title"] = driver.title
        seen["attachments"] = [[cell.text for cell in row.find_elements(By.TAG_NAME, "td")]
                               for row in driver.find_elements(By.CSS_SELECTOR, "#attachments tr")[1:]]
        seen["rule"] = driver.find_element(By.ID, "rule").text
        seen["outcome_before"] = driver.find_element(By.ID, "outcome").text
        seen["message_pwned"] = driver.execute_script(PWNED)
        seen["images"] = len(driver.find_elements(By.CSS_SELECTOR, "#subject img, #attachments img"))

        driver.find_element(By.ID, "release").click()
        wait.until(expected_conditions.presence_of_element_located((By.ID, "released")))
        seen["notice"] = driver.find_element(By.ID, "notice").text
        seen["outcome_after"] = driver.find_element(By.ID, "outcome").text
        seen["release_buttons_after"] = len(driver.find_elements(By.ID, "release"))
        seen["audit"] = [[cell.text for cell in row.find_elements(By.TAG_NAME, "td")][1:4]
                         for row in driver.find_elements(By.CSS_SELECTOR, "#audit tr")[1:]]

        # Updating: the first page, left open, fetches itself again and shows a message loaded after it was drawn.
        driver.get(base + "/?refresh=2")
        wait.until(expected_conditions.presence_of_element_located((By.ID, "messages")))
        driver.execute_script("window.notReloaded = true")
        rows_before = len(driver.find_elements(By.CSS_SELECTOR, "#messages tr"))
        print("WAITING", flush=True)
        new_subject = sys.stdin.readline().strip()
        WebDriverWait(driver, 60, poll_frequency=0.2).until(
            lambda page: any(cell.text == new_subject
                             for cell in page.find_elements(By.CSS_SELECTOR, "#messages td.subject")))
        seen["update_rows"] = [rows_before, len(driver.find_elements(By.CSS_SELECTOR, "#messages tr"))]
        seen["not_reloaded"] = driver.execute_script("return window.notReloaded === true")
        seen["update_pwned"] = driver.execute_script(PWNED)

        driver.find_element(By.ID, "logout").click()
        wait.until(expected_conditions.url_contains("/login"))
        driver.get(base + "/")
        seen["after_logout_url"] = driver.current_url
    return 0


if __name__ == "__main__":
    sys.exit(main())
