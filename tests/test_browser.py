"""
The console in a real browser: Debian's chromium, headless, driven by
Selenium through chromium-driver, against a real pair of twistd nodes.

It logs in, changes the threshold of both servers in Backup Settings and
sees both nodes report it, sees the backup's listener WAITING, presses
switchover (confirming) to see the roles swap, and sees the chart of the
heartbeat gaps drawn and redrawn on the status page.

With IWAY_CONSOLE_SCREENSHOTS=FOLDER set it also saves a screenshot of each
page there (console-status.png, console-listeners.png, console-settings.png,
console-log.png): `make screenshots` refreshes those in docs/.
"""

import os
import unittest

from harness import Pair, temporary_directory, wait_for

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
USER, PASSWORD = "ops", "night shift 3am"
SCREENSHOTS = os.environ.get("IWAY_CONSOLE_SCREENSHOTS")

try:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait
    from selenium.common.exceptions import WebDriverException
except ImportError:  # pragma: no cover - the test extra installs it
    webdriver = None


def missing():
    """Why the browser test cannot run here, or None."""
    if webdriver is None:
        return "selenium is not installed (pip install '.[test]')"
    absent = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.path.exists(p)]
    if absent:
        return f"{' and '.join(absent)} missing: install Debian's chromium and chromium-driver (make system-packages, as root)"
    return None


@unittest.skipIf(missing(), missing() or "")
class BrowserTests(unittest.TestCase):
    """The console, used as an operator would, in headless chromium."""

    def setUp(self):
        self.workdir = temporary_directory(self)
        self.pair = Pair(self.workdir, threshold=1.0, console_users={USER: PASSWORD})
        self.addCleanup(self.pair.stop)
        self.pair.start_both()
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1280,860", f"--user-data-dir={os.path.join(self.workdir, 'chromium')}",
                         "--no-first-run", "--disable-extensions", "--disable-background-networking"):
            options.add_argument(argument)
        self.browser = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        self.addCleanup(self.browser.quit)
        self.wait = WebDriverWait(self.browser, 15)

    def url(self, node, path):
        port = node.console.split(":")[1]
        return f"http://127.0.0.1:{port}{path}"

    def open(self, node, path):
        self.browser.get(self.url(node, path))
        self.wait.until(expected_conditions.presence_of_element_located((By.TAG_NAME, "main")))

    def text(self):
        return self.browser.find_element(By.TAG_NAME, "main").text

    def click(self, element_id):
        """Press a button that submits a form, and wait for the next page."""
        page = self.browser.find_element(By.TAG_NAME, "html")

        def gone(driver):
            # The old page's element is gone once asking about it fails: chromium says so with a
            # stale-element error, or at times (mid-navigation) with "Node with given id does not
            # belong to the document", which staleness_of does not take for staleness.
            try:
                page.is_enabled()
                return False
            except WebDriverException:
                return True

        def press(driver):
            # A press that meets a node just replaced is tried again, unless
            # the page is already gone (the press went through after all).
            try:
                driver.find_element(By.ID, element_id).click()
                return True
            except WebDriverException:
                return gone(driver)

        self.wait.until(press)
        self.wait.until(gone)
        self.wait.until(expected_conditions.presence_of_element_located((By.TAG_NAME, "main")))

    def log_in(self, node):
        self.open(node, "/")  # redirected to the login page
        self.assertEqual(self.browser.current_url, self.url(node, "/login"))
        self.browser.find_element(By.ID, "user").send_keys(USER)
        self.browser.find_element(By.ID, "password").send_keys(PASSWORD)
        self.browser.find_element(By.ID, "login").click()
        self.wait.until(expected_conditions.url_to_be(self.url(node, "/")))

    def screenshot(self, name):
        if SCREENSHOTS:
            os.makedirs(SCREENSHOTS, exist_ok=True)
            self.browser.save_screenshot(os.path.join(SCREENSHOTS, f"console-{name}.png"))

    def test_operator_changes_threshold_watches_listeners_and_switches_over(self):
        """Log in; save a new threshold and see both nodes report it; see the backup WAITING; switch over and see the roles swap."""
        a, b = self.pair.a, self.pair.b

        # Log in on the live node: its status page.
        self.log_in(a)
        role = self.browser.find_element(By.CSS_SELECTOR, "main [data-field=role]")
        self.assertEqual(role.text, "live")

        # Backup Settings: both servers' threshold 1 -> 1.5, saved.
        self.open(a, "/settings")
        for server in ("serv_a", "serv_b"):
            field = self.browser.find_element(By.ID, f"server:{server}/threshold")
            self.assertEqual(field.get_attribute("value"), "1.0")
            field.clear()
            field.send_keys("1.5")
        self.click("save")
        self.assertIn("Saved.", self.text())
        self.screenshot("settings")
        for node in (a, b):
            wait_for(lambda: (node.status() or {}).get("settings", {}).get("threshold") == 1.5, 10,
                     f"{node.name} to report threshold 1.5\n{node.log_tail()}")

        # A bad value is refused beside its field, in the browser too.
        field = self.browser.find_element(By.ID, "server:serv_b/threshold")
        field.clear()
        field.send_keys("soon")
        self.click("save")
        self.assertIn("not a number", self.browser.find_element(By.CSS_SELECTOR, ".field.invalid .error").text)

        # The listener monitor on the backup: WAITING.
        self.log_in(b)
        self.open(b, "/listeners")
        state = self.browser.find_element(By.CSS_SELECTOR, "[data-listener=web]")
        self.assertEqual(state.text, "WAITING")
        self.screenshot("listeners")

        # The log, for the screenshots.
        self.open(a, "/log")
        self.assertIn("saved", self.text())
        self.screenshot("log")

        # The backup's listener monitor stays open in a first tab...
        monitor = self.browser.current_window_handle
        self.open(b, "/listeners")
        self.browser.switch_to.new_window("tab")

        if SCREENSHOTS:
            # For the status page's picture: minutes of gaps heard by serv_b before it takes the role.
            wait_for(lambda: (b.gaps() or {}).get("heard", {}).get("count", 0) >= 400, 200, "400 heartbeats heard")

        # ...while a planned switchover is made from the live node, with its confirmation.
        self.open(a, "/")
        self.click("switchover")
        self.assertIn("Hand the live role from serv_a to serv_b?", self.text())
        self.click("confirm")
        self.assertIn("Switched over from serv_a to serv_b", self.text())
        wait_for(lambda: self.pair.roles() == ("backup", "live"), 10, "the roles to swap")

        # The monitor follows by itself, without a reload (the script polls /api/status).
        self.browser.switch_to.window(monitor)
        WebDriverWait(self.browser, 10).until(
            lambda driver: driver.find_element(By.CSS_SELECTOR, "[data-listener=web]").text == "ACTIVE"
        )
        self.assertEqual(self.browser.find_element(By.CSS_SELECTOR, "nav [data-field=role]").text, "live")

        # serv_b's status page: the chart of the heartbeat gaps it heard as a backup, then sent as live, with
        # the switchover's mark. The image is served to the logged-in browser (the CSP allows it), and the
        # script draws it again: its source changes while the page stays.
        self.open(b, "/")
        chart = self.browser.find_element(By.ID, "heartbeat-chart")
        self.assertIn("of the threshold 1.5 s", chart.get_attribute("alt"))
        WebDriverWait(self.browser, 10).until(
            lambda driver: "?t=" in chart.get_attribute("src") and driver.execute_script(
                "return arguments[0].complete && arguments[0].naturalWidth", chart)
        )
        if SCREENSHOTS:
            # And a minute of gaps sent as live after it.
            wait_for(lambda: (b.gaps() or {}).get("sent", {}).get("count", 0) >= 300, 200, "300 heartbeats sent")
            self.open(b, "/")
            self.screenshot("status")
