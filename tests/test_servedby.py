"""
The X-Served-By header of a web channel with served_by = true
(L{iwayfailover.servedby}): in memory on a twisted.web site, then end to end
on a real pair, before and after a takeover.
"""

import http.client
import os

from treq.testing import StubTreq
from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService
from twisted.trial import unittest
from twisted.web.resource import Resource
from twisted.web.server import Site
from twisted.web.static import Data

from harness import SHARED_LISTENER, Pair, temporary_directory, wait_for
from iwayfailover import servedby
from iwayfailover.config import parse_config

CONFIG = """\
[failover]
insecure = true

[server:serv_a]
backup_location = 127.0.0.1:1
heartbeat_port = 2
threshold = 3

[listener:web]
plugin = web --listen tcp:8080 --path /srv/www
{extra}
"""


def web_service():
    """A listener's service as a web plugin builds it: a MultiService holding an endpoint service of a Site."""
    root = Resource()
    root.putChild(b"", Data(b"home", "text/plain"))
    root.putChild(b"page", Data(b"a page", "text/plain"))
    top = MultiService()
    StreamServerEndpointService(object(), Site(root)).setServiceParent(top)
    return top


class ServedByTests(unittest.TestCase):
    def spec(self, extra):
        return parse_config(CONFIG.format(extra=extra), "/share/iway.ini").listeners["web"]

    def build(self, extra="served_by = true", who=lambda: "serv_a (live, epoch 3)"):
        service = servedby.builder(lambda spec: web_service(), who)(self.spec(extra))
        [site] = servedby.sites(service)
        return site

    def get(self, site, path, method="GET"):
        client = StubTreq(site.resource)
        response = self.successResultOf(client.request(method, "http://example" + path))
        return response, self.successResultOf(response.content())

    def test_every_answer_names_the_node_its_role_and_epoch(self):
        """With served_by = true every answer, a missing page's too, carries X-Served-By; the pages are the same."""
        site = self.build()
        for path, code, body in (("/", 200, b"home"), ("/page", 200, b"a page"), ("/nope", 404, None)):
            response, content = self.get(site, path)
            self.assertEqual(response.code, code, path)
            self.assertEqual(response.headers.getRawHeaders("X-Served-By"), ["serv_a (live, epoch 3)"], path)
            if body is not None:
                self.assertEqual(content, body)
        response, content = self.get(site, "/page", "HEAD")
        self.assertEqual((response.code, content), (200, b""))
        self.assertEqual(response.headers.getRawHeaders("X-Served-By"), ["serv_a (live, epoch 3)"])

    def test_the_header_is_read_at_each_request(self):
        """The header says how the node stands when it answers, not when the channel was built (a backup builds ahead)."""
        now = ["serv_b (backup, epoch 0)"]
        site = self.build(who=lambda: now[0])
        now[0] = "serv_b (live, epoch 1)"
        response, _ = self.get(site, "/")
        self.assertEqual(response.headers.getRawHeaders("X-Served-By"), ["serv_b (live, epoch 1)"])

    def test_without_served_by_the_site_is_left_alone(self):
        """served_by is off by default: no header, the site's own root."""
        site = self.build(extra="")
        self.assertNotIsInstance(site.resource, servedby.ServedBy)
        response, _ = self.get(site, "/")
        self.assertIsNone(response.headers.getRawHeaders("X-Served-By"))

    def test_the_example_site_shows_the_header(self):
        """conf/www's page fetches the header with a script of its own (no inline script); the example turns it on."""
        source = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        www = os.path.join(source, "conf", "www")
        if not os.path.isdir(www):
            raise unittest.SkipTest("needs the source tree's conf/www")
        with open(os.path.join(www, "index.html")) as f:
            page = f.read()
        self.assertIn('<script src="served-by.js"></script>', page)
        with open(os.path.join(www, "served-by.js")) as f:
            self.assertIn('headers.get("X-Served-By")', f.read())
        with open(os.path.join(source, "conf", "iwayfailover.ini")) as f:
            config = parse_config(f.read().replace("secret_file = failover.key", "insecure = true")
                                  .replace("console_users = console-users", ""), "conf/iwayfailover.ini")
        self.assertTrue(config.listeners["web"].served_by)


class ServedByEndToEndTests(unittest.TestCase):
    """A pair whose web channel has served_by = true, before and after a kill -9 of the live node."""

    def setUp(self):
        self.pair = Pair(temporary_directory(self))
        self.addCleanup(self.pair.stop)
        self.pair.listeners = SHARED_LISTENER + "served_by = true\n"
        self.pair.write_config()

    def served_by(self):
        connection = http.client.HTTPConnection("127.0.0.1", self.pair.web_port, timeout=2)
        try:
            connection.request("GET", "/")
            response = connection.getresponse()
            response.read()
            return response.getheader("X-Served-By")
        except OSError:
            return None
        finally:
            connection.close()

    def test_the_header_names_the_live_node_before_and_after_a_takeover(self):
        """serv_a (live, epoch N) while it serves; after its kill -9, serv_b (live, epoch N+1 or more)."""
        self.pair.start_both()
        epoch_a = self.pair.a.status()["epoch"]
        wait_for(lambda: self.served_by() == f"serv_a (live, epoch {epoch_a})", 5,
                 f"serv_a's header (got {self.served_by()!r})")
        self.pair.a.kill()
        status = self.pair.b.wait_role("live")
        wait_for(lambda: self.served_by() == f"serv_b (live, epoch {status['epoch']})", 5,
                 f"serv_b's header (got {self.served_by()!r})\n{self.pair.b.log_tail()}")
        self.assertGreater(status["epoch"], epoch_a)
