"""Drive a quarantined message's page in Debian's headless chromium (console_browser.py's browser): the MIME tree, then
every action button. Run by /usr/bin/python3; prints one JSON object of what the browser saw, which
tests/test_console_actions_pages.py judges.

Usage: console_actions_browser.py PORT USERNAME PASSWORD MESSAGE_ID OLD_MESSAGE_ID ADDRESS
"""

from __future__ import annotations

import sys

from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from console_browser import PWNED, browser, reporting

# The download link's bytes, fetched as the page's own script would (same origin, the session's cookie).
DOWNLOAD = """
var done = arguments[arguments.length - 1];
var link = document.getElementById("download");
fetch(link.href, {credentials: "same-origin"}).then(function (answer) {
  return answer.arrayBuffer().then(function (data) {
    var bytes = new Uint8Array(data), text = "";
    for (var i = 0; i < bytes.length; i++) { text += String.fromCharCode(bytes[i]); }
    done({status: answer.status, type: answer.headers.get("Content-Type"),
          disposition: answer.headers.get("Content-Disposition"), latin1: text});
  });
}).catch(function (problem) { done({error: String(problem)}); });
"""


def main() -> int:
    port, username, password, message_id, old_id, address = sys.argv[1:7]
    base = f"http://127.0.0.1:{port}"
    seen: dict = {}
    driver = browser()
    wait = WebDriverWait(driver, 60)  # a loaded CI machine, not a speed test

    def notice_after(button_id: str) -> str:
        """Click a button, wait for the page it leads back to, and read its notice."""
        old = driver.find_element(By.ID, "record")
        driver.find_element(By.ID, button_id).click()
        wait.until(expected_conditions.staleness_of(old))
        wait.until(expected_conditions.presence_of_element_located((By.ID, "notice")))
        return driver.find_element(By.ID, "notice").text

    with reporting(driver, seen):
        driver.get(base + "/login")
        driver.find_element(By.ID, "id_username").send_keys(username)
        driver.find_element(By.ID, "id_password").send_keys(password)
        driver.find_element(By.ID, "login").click()
        wait.until(expected_conditions.presence_of_element_located((By.ID, "messages")))

        driver.get(f"{base}/messages/{old_id}")
        wait.until(expected_conditions.presence_of_element_located((By.ID, "record")))
        seen["old_no_tree"] = [element.text for element in driver.find_elements(By.ID, "no-tree")]
        seen["old_tree_tables"] = len(driver.find_elements(By.ID, "tree"))

        driver.get(f"{base}/messages/{message_id}")
        wait.until(expected_conditions.presence_of_element_located((By.ID, "tree")))
        rows = driver.find_elements(By.CSS_SELECTOR, "#tree tr")[1:]
        seen["tree"] = [[cell.text for cell in row.find_elements(By.TAG_NAME, "td")] for row in rows]
        seen["tree_classes"] = [row.get_attribute("class") for row in rows]
        seen["tree_indent"] = [row.find_element(By.CSS_SELECTOR, "td.path").value_of_css_property("padding-left")
                               for row in rows]
        seen["decided_by"] = driver.find_element(By.ID, "decided-by").text
        seen["tree_images"] = len(driver.find_elements(By.CSS_SELECTOR, "#tree img"))
        seen["tree_pwned"] = driver.execute_script(PWNED)

        seen["download"] = driver.execute_async_script(DOWNLOAD)
        seen["delete_unconfirmed"] = notice_after("delete")
        driver.find_element(By.ID, "release-to-address").send_keys(address)
        seen["release_to"] = notice_after("release-to")
        seen["learn_spam"] = notice_after("learn-spam")
        seen["learn_spam_again"] = notice_after("learn-spam")
        seen["learn_ham"] = notice_after("learn-ham")
        driver.find_element(By.ID, "delete-confirm").click()
        seen["delete"] = notice_after("delete")
        seen["deleted_mark"] = [element.text for element in driver.find_elements(By.ID, "deleted")]
        seen["actions_after_delete"] = len(driver.find_elements(By.ID, "actions"))
        seen["audit"] = [[cell.text for cell in row.find_elements(By.TAG_NAME, "td")][1:4]
                         for row in driver.find_elements(By.CSS_SELECTOR, "#audit tr")[1:]]
        seen["pwned_at_end"] = driver.execute_script(PWNED)
    return 0


if __name__ == "__main__":
    sys.exit(main())
