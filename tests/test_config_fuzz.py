"""
Property tests: whatever text the shared file holds, parsing gives a
configuration or a ConfigError that names the file, never another exception.
"""

import atexit
import shutil
import tempfile

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir
from twisted.trial import unittest

# Hypothesis keeps a cache folder; keep it out of the source tree and remove it after the run.
_HOME = tempfile.mkdtemp(prefix="iwayfailover-hypothesis-")
set_hypothesis_home_dir(_HOME)
atexit.register(shutil.rmtree, _HOME, True)

from iwayfailover.config import ConfigError, SharedConfig, parse_config  # noqa: E402

PATH = "/share/iway.ini"

KEYS = [
    "heartbeat_interval", "reload_interval", "secret_file", "witness", "self_fence", "failback", "preferred",
    "failback_delay", "backup_location", "heartbeat_port", "threshold", "console", "priority", "plugin", "servers",
    "insecure", "unknown", "",
]
VALUES = st.one_of(
    st.sampled_from([
        "1", "0.5", "0", "-1", "nan", "inf", "1e309", "3", "65536", "tcp:1200", "tcp:99999", "127.0.0.1:1200",
        "[::1]:1200", "[zz]:1", "host:", ":1", "tcp:host=a:port=1", "ssl:", "unix:/x", "yes", "maybe", "serv_a",
        "serv_a, serv_b", ",", "web --listen tcp:8080", "'unclosed", "a:1, b:2", "²", "١٢", "\\", "%(x)s",
        "tls:iam2:1200", "tls:iam2:1200:trustRoots=", "tls:iam2:1200:trustRoots=/nonexistent.pem", "tls:iam2",
        "TLS:[::1]:1", "SSL:host=a:port=1", "ssl:1200:privateKey=/no.key", "ssl:1200:caCerts=", "tls:a:1:privateKey=/x",
        "ssl:1200:sslmethod=TLSv1_METHOD", "tls:a:99999", "tor:a:1", "9f" * 32, "failover.key", "/etc/passwd",
    ]),
    st.text(max_size=30),
)
SECTIONS = st.sampled_from(
    ["failover", "server:serv_a", "server:serv_b", "listener:web", "server:", "listener:", "DEFAULT", "server:bad name", "other"]
)


@st.composite
def ini_texts(draw):
    """Text shaped like the shared file: sections with keys drawn from the real ones, values good and bad."""
    lines = []
    for _ in range(draw(st.integers(0, 5))):
        lines.append(f"[{draw(SECTIONS)}]")
        for _ in range(draw(st.integers(0, 6))):
            lines.append(f"{draw(st.sampled_from(KEYS))} = {draw(VALUES)}")
    return "\n".join(lines) + draw(st.sampled_from(["", "\n", "\n  continued", "\n[", "\n= x"]))


VALID = [
    ("failover", "heartbeat_interval", "1"),
    ("failover", "reload_interval", "5"),
    ("failover", "witness", "10.0.0.9:22"),
    ("failover", "failback", "false"),
    ("server:serv_a", "backup_location", "iam2:1200"),
    ("server:serv_a", "heartbeat_port", "1200"),
    ("server:serv_a", "threshold", "3"),
    ("server:serv_a", "console", "tcp:8081:interface=127.0.0.1"),
    ("server:serv_a", "priority", "1"),
    ("server:serv_b", "backup_location", "iam1:1200"),
    ("server:serv_b", "heartbeat_port", "1200"),
    ("server:serv_b", "threshold", "3"),
    ("listener:web", "servers", "serv_a, serv_b"),
    ("listener:web", "plugin", "web --listen tcp:8080"),
]


@st.composite
def mutated_valid_texts(draw):
    """A valid file with one to three values replaced (and maybe one key added), so every value check is reached."""
    entries = list(VALID)
    for _ in range(draw(st.integers(1, 3))):
        index = draw(st.integers(0, len(entries) - 1))
        section, key, _ = entries[index]
        entries[index] = (section, key, draw(VALUES))
    if draw(st.booleans()):
        entries.append((draw(st.sampled_from([e[0] for e in VALID])), draw(st.sampled_from(KEYS)), draw(VALUES)))
    sections = {}
    for section, key, value in entries:
        sections.setdefault(section, []).append(f"{key} = {value}")
    return "\n".join(f"[{section}]\n" + "\n".join(lines) for section, lines in sections.items()) + "\n"


class ConfigParserProperties(unittest.TestCase):
    def check(self, text):
        try:
            result = parse_config(text, PATH)
        except ConfigError as e:
            self.assertIn(PATH, str(e))
        else:
            self.assertIsInstance(result, SharedConfig)

    @settings(max_examples=400, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.text(max_size=400))
    def test_any_text_gives_a_config_or_a_config_error(self, text):
        """Arbitrary text, whatever its characters, never raises anything but ConfigError."""
        self.check(text)

    @settings(max_examples=600, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
    @given(ini_texts())
    def test_ini_shaped_text_gives_a_config_or_a_config_error(self, text):
        """Files shaped like the real one, with every key and good and bad values, never raise anything else."""
        self.check(text)

    @settings(max_examples=800, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
    @given(mutated_valid_texts())
    def test_a_valid_file_with_bad_values_gives_a_config_or_a_config_error(self, text):
        """A real file with a few values changed to anything reaches every value check; none raises anything else."""
        self.check(text)
