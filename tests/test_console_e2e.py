"""
The console of real twistd nodes over real HTTP (no browser): the login
with its password checked off the reactor thread, a settings save that both
nodes apply, and the refusals at the door.
"""

import http.client
import re
import unittest
import urllib.parse

from harness import Pair, temporary_directory, wait_for

USER, PASSWORD = "ops", "night shift 3am"


class Browserless:
    """A tiny HTTP client keeping one console's session cookie."""

    def __init__(self, node):
        self.port = int(node.console.split(":")[1])
        self.cookie = None

    def request(self, method, path, form=None, headers=None):
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        headers = dict(headers or {})
        body = None
        if form is not None:
            body = urllib.parse.urlencode(form)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        if self.cookie:
            headers["Cookie"] = self.cookie
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        text = response.read().decode("utf-8")
        connection.close()
        cookie = response.getheader("Set-Cookie")
        if cookie:
            self.cookie = cookie.split(";")[0]
        return response, text

    def csrf(self, text):
        return re.search(r'name="csrf" value="([^"]+)"', text).group(1)

    def log_in(self):
        _, page = self.request("GET", "/login")
        return self.request("POST", "/login", {"user": USER, "password": PASSWORD, "csrf": self.csrf(page)})


class ConsoleEndToEndTests(unittest.TestCase):
    """A pair with console endpoints and a console_users file."""

    def setUp(self):
        self.pair = Pair(temporary_directory(self), console_users={USER: PASSWORD})
        self.addCleanup(self.pair.stop)
        self.pair.start_both()

    def test_login_and_save_applied_by_both_nodes(self):
        """Log in on serv_a, save threshold 1.5 for both servers; both nodes report it in /api/status."""
        client = Browserless(self.pair.a)
        response, _ = client.log_in()
        self.assertEqual((response.status, response.getheader("Location")), (303, "/"))
        _, page = client.request("GET", "/settings")
        form = dict(re.findall(r'<input type="text" name="([^"]+)" id="[^"]+" value="([^"]*)"', page))
        form.update({"server:serv_a/threshold": "1.5", "server:serv_b/threshold": "1.5", "csrf": client.csrf(page),
                     "digest": re.search(r'name="digest" value="([^"]+)"', page).group(1)})
        response, page = client.request("POST", "/settings", form)
        self.assertEqual(response.status, 200, page)
        for node in (self.pair.a, self.pair.b):
            wait_for(lambda: (node.status() or {}).get("settings", {}).get("threshold") == 1.5, 10,
                     f"{node.name} to report threshold 1.5\n{node.log_tail()}")
        self.assertIn("console: ops from 127.0.0.1 saved", self.pair.a.log_text())

    def test_refusals_at_the_door(self):
        """Without a login pages redirect and posts are refused; a wrong password is logged; /api/status answers."""
        client = Browserless(self.pair.b)
        response, _ = client.request("GET", "/listeners")
        self.assertEqual((response.status, response.getheader("Location")), (303, "/login"))
        response, _ = client.request("POST", "/settings", {"server:serv_b/threshold": "9"})
        self.assertEqual(response.status, 403)
        _, page = client.request("GET", "/login")
        response, _ = client.request("POST", "/login", {"user": USER, "password": "wrong", "csrf": client.csrf(page)})
        self.assertEqual(response.status, 403)
        wait_for(lambda: "failed login as 'ops' from 127.0.0.1" in self.pair.b.log_text(), 5, "the failed login in the log")
        response, text = client.request("GET", "/api/status")
        self.assertEqual(response.status, 200)
        self.assertIn('"role": "backup"', text)
        response, _ = client.request("POST", "/api/switchover", {}, headers={"Origin": "http://127.0.0.1:1"})
        self.assertEqual(response.status, 403)
        self.assertEqual(self.pair.roles(), ("live", "backup"))
