"""
The administration console's pages, rendered on the server with
twisted.web.template in one shared layout (a left pane of links, the page
on the right): Status, Listeners, Backup Settings, Log, and the login.

The pages ask the node only what L{iwayfailover.status.INodeControl}
offers: they read its status snapshot, and ask for a switchover, a
listener's restart, its checks of a configuration or a reload.

Actions are plain HTML forms (each with the session's CSRF token, checked
by L{iwayfailover.console.access.GuardedRoot}); the only script, served
from C{/static/console.js}, polls C{/api/status} to keep states current.
"""

from __future__ import annotations

import datetime
from typing import Optional

from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import IRealm, Portal
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.filepath import FilePath
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from twisted.web.template import Element, XMLFile, renderElement, renderer, tags
from zope.interface import Interface, implementer

from iwayfailover import configfile
from iwayfailover.channel import FAILED
from iwayfailover.console import settings as form
from iwayfailover.console.access import SESSION_COOKIE, GuardedRoot, LoginLimiter, Sessions, client_address
from iwayfailover.console.users import ConsoleUser, UsersFileChecker, users_now
from iwayfailover.core.events import LIVE
from iwayfailover.gaps import chart_svg
from iwayfailover.gaps import summary as gap_summary
from iwayfailover.status import ListenerRestartRefused, SwitchoverRefused, iso

log = Logger(namespace="iwayfailover.console")

HERE = FilePath(__file__).parent()
TEMPLATES = HERE.child("templates")
STATIC = HERE.child("static")

USERS_CHECK_INTERVAL = 60.0
"""Seconds between looks at the users file for users removed or given a new password."""

MAX_WAITING_LOGINS = 8
"""Logins waiting for the (one at a time) password hash; more are answered 503."""

NAVIGATION = ((b"", "Status"), (b"listeners", "Listeners"), (b"settings", "Backup Settings"), (b"log", "Log"))


class IConsoleUser(Interface):
    """A person logged in to the console."""


@implementer(IRealm)
class ConsoleRealm:
    def requestAvatar(self, avatarId, mind, *interfaces):
        if IConsoleUser not in interfaces:
            raise NotImplementedError("the console's realm only has console users")
        return IConsoleUser, ConsoleUser(avatarId), lambda: None


def _clock_time(wall: float) -> str:
    return datetime.datetime.fromtimestamp(wall, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def role_badge(role: str):
    return tags.span(role, class_=f"role role-{role}", **{"data-field": "role"})


def state_badge(name: str, state: str):
    return tags.span(state, class_=f"state state-{state}", **{"data-listener": name})


class Layout(Element):
    """The shared page: the left pane, the title, a notice and the content."""

    loader = XMLFile(TEMPLATES.child("layout.xml"))

    def __init__(self, console, current: bytes, title: str, content, notice=None, error=False):
        super().__init__()
        self.console = console
        self.current = current
        self.title = title
        self.content_ = content
        self.notice_ = notice
        self.error = error

    @renderer
    def page(self, request, tag):
        return tag.fillSlots(title=self.title, server=self.console.server)

    @renderer
    def role(self, request, tag):
        session = getattr(request, "console_session", None)
        if session is None or session.user is None:
            return ""
        return role_badge(self.console.node.status().role)

    @renderer
    def links(self, request, tag):
        session = getattr(request, "console_session", None)
        if session is None or session.user is None:
            return tag(tags.li(tags.a("Log in", href="/login", class_="current")))
        items = []
        for path, label in NAVIGATION:
            attributes = {"href": "/" + path.decode()}
            if path == self.current:
                attributes["class"] = "current"
            items.append(tags.li(tags.a(label, **attributes)))
        return tag(*items)

    @renderer
    def user(self, request, tag):
        session = getattr(request, "console_session", None)
        if session is None or session.user is None:
            return ""
        return tag(
            "Logged in as ", tags.strong(session.user),
            tags.form(csrf_field(request), tags.button("Log out", type="submit"), method="post", action="/logout"),
            class_="user",
        )

    @renderer
    def config_banner(self, request, tag):
        session = getattr(request, "console_session", None)
        if session is None or session.user is None:
            return ""
        return config_banner(self.console.node.status())

    @renderer
    def notice(self, request, tag):
        if not self.notice_:
            return ""
        return tag(self.notice_, class_="notice error" if self.error else "notice", role="status")

    @renderer
    def content(self, request, tag):
        return self.content_


def csrf_field(request):
    session = getattr(request, "console_session", None)
    return tags.input(type="hidden", name="csrf", value=session.csrf if session is not None else "")


def _arg(request, name: str) -> str:
    value = (request.args.get(name.encode()) or [b""])[0]
    return value.decode("utf-8", "replace").strip()


class Page(Resource):
    """A console page: C{content(request)} (a tag, or a Deferred of one) in the layout."""

    isLeaf = True
    path = b""
    title = ""

    def __init__(self, console):
        super().__init__()
        self.console = console

    def show(self, request, content, notice=None, error=False, code=200):
        if getattr(request, "_disconnected", False):
            return NOT_DONE_YET  # the browser left while a switchover or a save was under way
        request.setResponseCode(code)
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        renderElement(request, Layout(self.console, self.path, self.title, content, notice, error), doctype=b"<!DOCTYPE html>")
        return NOT_DONE_YET

    def render_GET(self, request):
        return self.show(request, self.content(request))

    def content(self, request):
        raise NotImplementedError


# -- Status --


def peer_role_text(peer) -> str:
    """The peer's role as the page says it: a peer not connected is shown as last seen, not as it is now."""
    if not peer.role:
        return "role unknown"
    return peer.role if peer.connected else f"last seen {peer.role}"


def no_backup_banner(status):
    """
    A warning on a live node's Status page while its backup is not
    connected: nothing would take over if this node failed. Hidden
    otherwise; the page's script shows and hides it as the status changes.
    """
    peer = status.peer
    attributes = {"class": "banner warning", "role": "status", "data-live": "no-backup"}
    if status.role != LIVE or peer.connected:
        attributes["hidden"] = ""
    return tags.div(
        tags.strong("No backup connected: "),
        tags.span(peer.name or "the backup", **{"data-field": "no-backup-peer"}),
        " is not connected to this live node, so nothing would take over if it failed. See its log,"
        " and bring it back (started with -b, it comes back as the backup).",
        **attributes,
    )


def failed_banner(status):
    """
    A warning across the top of the Status page while a live node serves
    with FAILED listeners, naming each with its reason and its next
    automatic retry; hidden otherwise (the page's script shows and fills it
    as the status changes).
    """
    failed = status.failed()
    items = []
    for name, channel in failed.items():
        retry = ""
        if channel.retry_in is not None:
            retry = f" (automatic retry {(channel.retries or 0) + 1} in {channel.retry_in:.1f} s)"
        items.append(tags.li(tags.strong(name), f": {channel.reason or 'no reason given'}{retry}"))
    attributes = {"class": "banner", "role": "alert", "data-live": "failed-listeners"}
    if not failed:
        attributes["hidden"] = "hidden"
    return tags.div(
        tags.strong(
            "This node is live, but ", tags.span(str(len(failed)), **{"data-field": "failed-count"}),
            " of its listeners FAILED and serve nobody:",
        ),
        tags.ul(*items, **{"data-field": "failed-list"}),
        tags.a("Listeners", href="/listeners"), " (Restart tries one again now).",
        **attributes,
    )


def config_banner(status):
    """
    A warning across the top of every page while the node runs from its
    local copy of the configuration (its share could not be read at its
    start), naming the copy, when it was saved and why the share is not
    used; nothing otherwise. The page's script hides it once the node is
    back on the shared file.
    """
    config = status.config
    if not config.from_copy:
        return ""
    saved = "at an unknown time" if config.local_copy_saved is None else iso(config.local_copy_saved)
    return tags.div(
        tags.strong("Running from the local copy"), f" of {config.path}",
        f" ({config.local_copy})" if config.local_copy else "", f" saved {saved}: the share cannot be read: ",
        tags.span(config.last_error or "it could not be read at the start", **{"data-field": "share-error"}),
        ". The node goes back to the shared file as soon as it can be read.",
        **{"class": "banner", "role": "alert", "data-live": "local-copy"},
    )


class StatusPage(Page):
    path = b""
    title = "Status"

    def content(self, request):
        status = self.console.node.status()
        if status.coordinator is not None:
            return self.group_content(request, status)
        peer = status.peer
        age = peer.last_heartbeat_age
        settings = status.settings
        facts = tags.dl(
            *self.own_facts(status),
            tags.dt("Peer"), tags.dd(
                tags.span(peer.name or "?", **{"data-field": "peer-name"}), ", ",
                tags.span("connected" if peer.connected else "not connected", **{"data-field": "peer-connected"}),
                ", ", tags.span(peer_role_text(peer), **{"data-field": "peer-role"}),
            ),
            tags.dt("Last heartbeat"), tags.dd(
                tags.span("never heard" if age is None else f"{age:.1f} s ago", **{"data-field": "peer-age"})
            ),
            tags.dt("Threshold"), tags.dd(
                tags.span(f"{settings.threshold:g} s", **{"data-field": "threshold"}),
                f", heartbeat every {settings.heartbeat_interval:g} s",
            ),
            class_="facts", **{"data-live": "status"},
        )
        return tags.div(
            failed_banner(status), no_backup_banner(status), facts, self.gaps_chart(status),
            self.switchover_form(request, status), self.transitions(status),
        )

    def gaps_chart(self, status):
        """The heartbeat gaps of the last minutes against the threshold, over the roles (C{/charts/heartbeat.svg})."""
        gaps = status.heartbeats.gaps
        return tags.div(
            tags.h2("Heartbeat gaps"),
            tags.p(
                "The largest gap between heartbeats in each second of the last ", str(gaps.window // 60),
                " minutes, against the threshold: how close the pair came to a takeover. The band on top is this"
                " node's role; each dashed mark is a transition. Numbers: ", tags.a("/api/gaps", href="/api/gaps"),
                " and ", tags.code("iwayfailover_heartbeat_gap_seconds"), " in ", tags.a("/metrics", href="/metrics"),
                ".", class_="muted",
            ),
            tags.img(
                src="/charts/heartbeat.svg", alt=gap_summary(gaps, status.settings.threshold), width="760",
                height="260", class_="chart", id="heartbeat-chart", **{"data-live": "chart"},
            ),
        )

    def own_facts(self, status):
        return (
            tags.dt("Server"), tags.dd(status.server),
            tags.dt("Role"), tags.dd(role_badge(status.role)),
            tags.dt("Epoch"), tags.dd(str(status.epoch), **{"data-field": "epoch"}),
            tags.dt("Since"), tags.dd(tags.span(iso(status.since), **{"data-field": "since"})),
            tags.dt("Why"), tags.dd(tags.span(status.cause or "", **{"data-field": "cause"})),
        )

    def group_content(self, request, status):
        """A group member's page: the coordinator's facts and every member instead of a peer."""
        coordinator = status.coordinator
        facts = tags.dl(
            *self.own_facts(status),
            tags.dt("Coordinator"), tags.dd(
                f"{coordinator.kind} at ", tags.span(", ".join(coordinator.endpoints) or "?", **{"data-field": "coordinator-endpoints"}),
                ", ", tags.span(connected_text(coordinator), **{"data-field": "coordinator-connected"}),
            ),
            tags.dt("Live member"), tags.dd(
                tags.span(live_text(coordinator), **{"data-field": "coordinator-live"}),
            ),
            tags.dt("Lease"), tags.dd(
                tags.span(lease_text(coordinator), **{"data-field": "lease"}),
                f", kept alive every {status.settings.heartbeat_interval:g} s while live",
            ),
            class_="facts", **{"data-live": "status"},
        )
        return tags.div(
            failed_banner(status), facts, members_table(status), self.switchover_form(request, status),
            self.transitions(status),
        )

    def switchover_form(self, request, status):
        peer = status.peer.name or "the backup"
        if status.role != LIVE:
            return tags.p(
                f"A planned switchover is started on the live node; this node is {status.role}.", class_="muted"
            )
        if status.coordinator is not None:
            choices = [tags.option("the next member by priority", value="")]
            choices += [tags.option(m.name, value=m.name) for m in status.members if m.name != status.server]
            return tags.div(
                tags.h2("Planned switchover"),
                tags.p("Stop this node's listeners and hand the live role to another member of the group."),
                tags.form(
                    csrf_field(request),
                    tags.label("To ", tags.select(*choices, name="to", id="switchover-to"), **{"for": "switchover-to"}),
                    " ", tags.button("Switch over…", type="submit", id="switchover"),
                    method="post", action="/switchover",
                ),
            )
        return tags.div(
            tags.h2("Planned switchover"),
            tags.p(f"Stop this node's listeners and hand the live role to {peer}."),
            tags.form(csrf_field(request), tags.button(f"Switch over to {peer}…", type="submit", id="switchover"),
                      method="post", action="/switchover"),
        )

    def transitions(self, status):
        rows = [
            tags.tr(tags.td(iso(t.at)), tags.td(t.previous or ""), tags.td(t.role), tags.td(str(t.epoch)), tags.td(t.cause or ""))
            for t in reversed(status.transitions)
        ]
        return tags.div(
            tags.h2("Recent transitions"),
            tags.table(
                tags.thead(tags.tr(tags.th("At"), tags.th("From"), tags.th("To"), tags.th("Epoch"), tags.th("Why"))),
                tags.tbody(*rows) if rows else tags.tbody(tags.tr(tags.td("none yet", colspan="5"))),
            ),
        )


def connected_text(coordinator) -> str:
    if coordinator.connected:
        return "connected"
    return "not connected" + (f" ({coordinator.last_error})" if coordinator.last_error else "")


def live_text(coordinator) -> str:
    if coordinator.live is None:
        return "nobody holds the live role"
    return coordinator.live + ("" if coordinator.live_epoch is None else f" (epoch {coordinator.live_epoch})")


def lease_text(coordinator) -> str:
    ttl = "TTL not granted yet" if coordinator.lease_ttl is None else f"TTL {coordinator.lease_ttl} s"
    if coordinator.lease_left is None:
        return f"{ttl}; this node holds no live lease"
    return f"{ttl}; {max(0.0, coordinator.lease_left):.1f} s left"


def members_table(status):
    """Every member of the group: its role, epoch, priority, since when, and a link to its console."""
    rows = []
    for member in status.members:
        name = tags.td(tags.strong(member.name), " (this node)") if member.name == status.server else tags.td(member.name)
        role = member.role if member.may_campaign else f"{member.role} (does not campaign)"
        console = tags.a(member.console, href=member.console) if member.console else ""
        rows.append(tags.tr(
            name, tags.td(role, **{"data-member-role": member.name}), tags.td("" if member.epoch is None else str(member.epoch)),
            tags.td(str(member.priority)), tags.td("" if member.since is None else iso(member.since)), tags.td(console),
        ))
    if not rows:
        rows = [tags.tr(tags.td("no member has registered yet", colspan="6"))]
    return tags.div(
        tags.h2("Members"),
        tags.table(
            tags.thead(tags.tr(tags.th("Member"), tags.th("Role"), tags.th("Epoch"), tags.th("Priority"), tags.th("Since"),
                               tags.th("Console"))),
            tags.tbody(*rows),
            **{"data-live": "members"},
        ),
    )


class SwitchoverPage(Page):
    """C{POST /switchover}: first a confirmation, then (C{confirm=yes}) the switchover itself."""

    path = b""
    title = "Planned switchover"

    def render_GET(self, request):
        request.setResponseCode(303)
        request.setHeader(b"location", b"/")
        return b""

    def render_POST(self, request):
        node = self.console.node
        status = node.status()
        to = _arg(request, "to") if status.coordinator is not None else ""
        peer = to or ("the next member by priority" if status.coordinator is not None else status.peer.name or "the backup")
        if _arg(request, "confirm") != "yes":
            return self.show(request, tags.div(
                tags.p(
                    f"Hand the live role from {status.server} to {peer}? Every listener stops here first, then starts on {peer};"
                    " for that moment no listener serves."
                ),
                tags.form(
                    csrf_field(request), tags.input(type="hidden", name="confirm", value="yes"),
                    tags.input(type="hidden", name="to", value=to) if to else "",
                    tags.button(f"Yes, switch over to {peer}", type="submit", class_="danger", id="confirm"),
                    " ", tags.a("Cancel", href="/", class_="button"),
                    method="post", action="/switchover",
                ),
            ))
        user = request.console_session.user
        log.info("console: {user} from {client} asked for a planned switchover", user=user, client=client_address(request))
        cause = f"planned switchover to {peer}, asked by {user} on the console"
        d = node.switchover(cause=cause, to=to) if to else node.switchover(cause=cause)

        def done(result):
            return self.show(request, tags.p(tags.a("Back to the status", href="/")), notice=(
                f"Switched over from {result['from']} to {result['to']} (epoch {result['epoch']});"
                f" no listener served for {result['gap'] * 1000:.1f} ms."
            ))

        def refused(failure):
            failure.trap(SwitchoverRefused)
            return self.show(request, tags.p(tags.a("Back to the status", href="/")),
                             notice=f"No switchover: {failure.getErrorMessage()}", error=True, code=409)

        def failed(failure):
            log.failure("console switchover failed", failure)
            return self.show(request, tags.p(tags.a("Back to the status", href="/")),
                             notice=f"The switchover failed: {failure.getErrorMessage()}", error=True, code=500)

        d.addCallbacks(done, refused).addErrback(failed)
        return NOT_DONE_YET


# -- Listeners --


class ListenersPage(Page):
    """C{/listeners}, with C{/listeners/restart} below it."""

    isLeaf = False
    path = b"listeners"
    title = "Listeners"

    def __init__(self, console):
        super().__init__(console)
        self.putChild(b"restart", RestartPage(console, self))

    def render_GET(self, request):
        # How a restart went, once: the restart's POST answered with a redirect here.
        session = request.console_session
        notice, error = (session.notice if session is not None and session.notice else (None, False))
        if session is not None:
            session.notice = None
        return self.show(request, self.content(request), notice=notice, error=error)

    def content(self, request):
        status = self.console.node.status()
        rows = []
        for name, channel in status.listeners.items():
            action = ""
            if channel.state == FAILED:
                action = tags.form(
                    csrf_field(request), tags.input(type="hidden", name="listener", value=name),
                    tags.button("Restart", type="submit", id=f"restart-{name}"),
                    method="post", action="/listeners/restart", class_="inline",
                )
            rows.append(tags.tr(
                tags.td(name), tags.td(state_badge(name, channel.state)),
                tags.td(iso(channel.since), **{"data-listener-since": name}),
                tags.td(channel.reason or "", **{"data-listener-reason": name}),
                tags.td(action),
            ))
        if not rows:
            rows = [tags.tr(tags.td("no listener runs on this server", colspan="5"))]
        return tags.div(
            tags.p(f"{status.server} is ", role_badge(status.role),
                   ": a backup's listeners are WAITING (built, not listening); a live node's are ACTIVE."),
            tags.table(
                tags.thead(tags.tr(tags.th("Listener"), tags.th("State"), tags.th("Since"), tags.th("Reason"), tags.th(""))),
                tags.tbody(*rows),
                **{"data-live": "listeners"},
            ),
        )


class RestartPage(Page):
    """
    C{POST /listeners/restart}: start one FAILED listener again, then send
    the browser back to C{/listeners} (303, post-redirect-get), which says
    once how it went: a reload there neither restarts again nor repeats the
    notice.
    """

    path = b"listeners"
    title = "Listeners"

    def __init__(self, console, listeners: ListenersPage):
        super().__init__(console)
        self.listeners = listeners

    def render_GET(self, request):
        request.setResponseCode(303)
        request.setHeader(b"location", b"/listeners")
        return b""

    def _back(self, request, notice, error=False):
        if getattr(request, "_disconnected", False):
            return NOT_DONE_YET  # the browser left while the restart was under way
        request.console_session.notice = (notice, error)
        request.setResponseCode(303)
        request.setHeader(b"location", b"/listeners")
        request.finish()
        return NOT_DONE_YET

    def render_POST(self, request):
        name = _arg(request, "listener")
        user = request.console_session.user
        try:
            d = self.console.node.restart_listener(name)
        except ListenerRestartRefused as e:
            return self._back(request, f"Not restarted: {e}", error=True)
        log.info("console: {user} from {client} restarted listener {listener}",
                 user=user, client=client_address(request), listener=name)

        def done(_):
            channel = self.console.node.status().listeners.get(name)
            failed = channel is not None and channel.state == FAILED
            notice = f"Listener {name} is {'gone' if channel is None else channel.state}" + (f": {channel.reason}" if failed else ".")
            return self._back(request, notice, error=failed)

        def broken(failure):
            log.failure("console: restarting listener {listener} failed", failure, listener=name)
            return self._back(request, f"Listener {name} could not be restarted: {failure.getErrorMessage()}", error=True)

        d.addCallback(done).addErrback(broken)
        return NOT_DONE_YET


# -- Backup Settings --


class SettingsPage(Page):
    path = b"settings"
    title = "Backup Settings"

    def render_GET(self, request):
        d = self.console.read_config_text()
        d.addCallback(lambda text: self.show(request, self.form(request, text, {}, {})))
        d.addErrback(lambda f: self.show(request, "", notice=f"Cannot read {self.console.config_path()}: "
                                         f"{f.getErrorMessage()}", error=True, code=500))
        return NOT_DONE_YET

    def form(self, request, text, typed, errors):
        """The form for the file's C{text}; C{typed} values (what was submitted) win over the file's."""
        values = form.raw_values(text)
        path = self.console.config_path()
        sections = ["failover"] + form.server_sections(text)
        fieldsets = []
        for section in sections:
            kind = "failover" if section == "failover" else "server"
            legend = "[failover] (both servers)" if kind == "failover" else section.partition(":")[2]
            rows = []
            for field in form.fields_of(section):
                value = typed.get((section, field.key), values.get(section, {}).get(field.key, ""))
                error = errors.get((section, field.key))
                name = f"{section}/{field.key}"
                rows.append(tags.div(
                    tags.label(field.label, **{"for": name}),
                    tags.input(type="text", name=name, id=name, value=value,
                               **({"placeholder": f"default: {field.default}"} if field.default else {})),
                    tags.span(error, class_="error") if error else tags.span(field.help, class_="help"),
                    class_="field invalid" if error else "field",
                ))
            for key in form.READ_ONLY[kind]:
                if key in values.get(section, {}):
                    rows.append(tags.div(
                        tags.label(key), tags.span(values[section][key], class_="readonly"),
                        tags.span("edit the file to change this", class_="help"), class_="field",
                    ))
            fieldsets.append(tags.fieldset(tags.legend(legend), *rows))
        general = errors.get(None)
        return tags.div(
            tags.p(f"The shared configuration {path}. Both servers read it; a saved change is applied by both"
                   f" within the reload interval."),
            tags.div(general, class_="notice error") if general else "",
            tags.form(
                csrf_field(request), tags.input(type="hidden", name="digest", value=configfile.digest(text.encode("utf-8"))),
                *fieldsets,
                tags.button("Save", type="submit", id="save"),
                method="post", action="/settings",
            ),
        )

    def render_POST(self, request):
        console = self.console
        typed = {}
        for key, values in request.args.items():
            section, slash, name = key.decode("utf-8", "replace").partition("/")
            if slash and (section == "failover" or section.startswith("server:")):
                typed[(section, name)] = values[0].decode("utf-8", "replace").strip()
        read_digest = _arg(request, "digest")
        path = console.config_path()
        user = request.console_session.user

        @defer.inlineCallbacks
        def save():
            text = yield console.read_config_text()
            if configfile.digest(text.encode("utf-8")) != read_digest:
                return self.show(request, self.form(request, text, {}, {}), code=409, error=True, notice=(
                    f"{path} changed since this page was opened (someone else saved it). This is the file as it is"
                    " now: make your change again."
                ))
            # The checks read files (secret_file, console_users, TLS files) and
            # discover plugins: away from the reactor thread.
            new_text, errors = yield console.run(form.check_form, text, path, typed, console.check_whole)
            if new_text is None:
                return self.show(request, self.form(request, text, typed, errors), code=400, error=True,
                                 notice="Not saved: correct the fields marked below.")
            if new_text == text:
                return self.show(request, self.form(request, text, {}, {}), notice="Nothing changed; nothing saved.")
            try:
                yield console.run(configfile.write_config, path, new_text, read_digest)
            except configfile.ConfigConflict as e:
                text = yield console.read_config_text()
                return self.show(request, self.form(request, text, {}, {}), code=409, error=True,
                                 notice=f"Not saved: {e}. This is the file as it is now.")
            except OSError as e:
                return self.show(request, self.form(request, text, typed, {}), code=500, error=True,
                                 notice=f"Not saved: cannot write {path}: {e.strerror or e}")
            log.info("console: {user} from {client} saved {path}", user=user, client=client_address(request), path=path)
            console.node.reload_config()
            interval = console.node.status().settings.reload_interval
            return self.show(request, self.form(request, new_text, {}, {}), notice=(
                f"Saved. This node applies it now; the other within {interval:g} s (its reload interval)."
            ))

        def failed(failure):
            log.failure("console: saving the settings failed", failure)
            return self.show(request, "", notice=f"Not saved: {failure.getErrorMessage()}", error=True, code=500)

        save().addErrback(failed)
        return NOT_DONE_YET


# -- Log --


class LogPage(Page):
    path = b"log"
    title = "Log"

    def content(self, request):
        events = self.console.events.recent() if self.console.events is not None else []
        rows = [
            tags.tr(tags.td(_clock_time(e.at)), tags.td(e.level), tags.td(e.source), tags.td(e.text), class_=f"level-{e.level}")
            for e in events
        ]
        if not rows:
            rows = [tags.tr(tags.td("no events yet", colspan="4"))]
        return tags.div(
            tags.p("This node's recent events, newest first (times in UTC)."),
            tags.table(
                tags.thead(tags.tr(tags.th("At (UTC)"), tags.th("Level"), tags.th("Source"), tags.th("Event"))),
                tags.tbody(*rows),
            ),
        )


# -- Login and logout --


class LoginPage(Page):
    path = b"login"
    title = "Log in"

    def render_GET(self, request):
        session = request.console_session
        if session is not None and session.user is not None:
            return self._redirect(request, b"/")
        if session is None:
            # One anonymous session holds the form's token; kept across reloads
            # (and the browser's own requests, e.g. for a favicon, redirected here).
            request.console_session = self.console.sessions.new(request, None)
        return self.show(request, self.login_form(request))

    def login_form(self, request, user=""):
        missing = self.console.users_file() is None
        return tags.div(
            tags.p(
                "No console_users file is configured for this server: nobody can log in. Make one with"
                " `iwsrv adduser FILE USER` and set console_users = FILE in [failover].", class_="notice error",
            ) if missing else "",
            tags.form(
                csrf_field(request),
                tags.label("User", **{"for": "user"}), tags.input(type="text", name="user", id="user", value=user, autocomplete="username"),
                tags.label("Password", **{"for": "password"}),
                tags.input(type="password", name="password", id="password", autocomplete="current-password"),
                tags.button("Log in", type="submit", id="login"),
                method="post", action="/login", class_="login",
            ),
        )

    def _redirect(self, request, where):
        request.setResponseCode(303)
        request.setHeader(b"location", where)
        return b""

    def render_POST(self, request):
        console = self.console
        address = client_address(request)
        user = _arg(request, "user")
        wait = console.limiter.wait(address)
        if wait > 0:
            log.warn("console: login from {client} refused: too many failed logins (wait {wait:.0f}s)", client=address, wait=wait)
            request.setHeader(b"retry-after", str(int(wait) + 1).encode())
            return self.show(request, self.login_form(request, user), code=429, error=True,
                             notice=f"Too many failed logins from {address}; try again in {int(wait) + 1} s.")
        if len(console.hashing.waiting) >= MAX_WAITING_LOGINS:
            log.warn("console: login from {client} refused: too many logins at once", client=address)
            request.setHeader(b"retry-after", b"5")
            return self.show(request, self.login_form(request, user), code=503, error=True,
                             notice="Too many logins at once; try again in a few seconds.")
        password = (request.args.get(b"password") or [b""])[0]
        # Counted from now (not once its hash is done): parallel tries from one
        # address cannot pass the limit. One password hash at a time per console.
        console.limiter.begin(address)
        d = console.hashing.run(console.portal.login, UsernamePassword(user.encode("utf-8"), password), None, IConsoleUser)

        def checked(result):
            console.limiter.end(address)
            return result

        d.addBoth(checked)

        def welcome(result):
            _, avatar, _ = result
            console.limiter.succeeded(address)
            request.console_session = console.sessions.new(request, avatar.name)
            request.console_session.stamp = console.checker.verified.get(avatar.name)
            log.info("console: {user} logged in from {client}", user=avatar.name, client=address)
            return self._finish(request, self._redirect(request, b"/"))

        def refused(failure):
            failure.trap(UnauthorizedLogin)
            console.limiter.failed(address)
            log.warn("console: failed login as {user!r} from {client}: {why}", user=user, client=address,
                     why=failure.getErrorMessage())
            return self.show(request, self.login_form(request, user), code=403, error=True,
                             notice="Wrong user name or password.")

        d.addCallbacks(welcome, refused)
        def broken(failure):
            log.failure("console login failed", failure)
            request.setResponseCode(500)
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            self._finish(request, b"the login could not be checked; the reason is in the node's log\n")

        d.addErrback(broken)
        return NOT_DONE_YET

    @staticmethod
    def _finish(request, body):
        if getattr(request, "_disconnected", False):
            return
        if body:
            request.write(body)
        request.finish()


class LogoutPage(Resource):
    isLeaf = True

    def __init__(self, console):
        super().__init__()
        self.console = console

    def render_POST(self, request):
        session = request.console_session
        log.info("console: {user} logged out", user=session.user if session else None)
        self.console.sessions.end(request)
        request.setResponseCode(303)
        request.setHeader(b"location", b"/login")
        return b""


class ChartResource(Resource):
    """C{GET /charts/heartbeat.svg}: the status page's chart of heartbeat gaps (L{iwayfailover.gaps.chart_svg})."""

    isLeaf = True

    def __init__(self, console):
        super().__init__()
        self.console = console

    def render_GET(self, request):
        status = self.console.node.status()
        body = chart_svg(
            status.heartbeats.gaps, status.settings.threshold, status.settings.heartbeat_interval,
            status.transitions, status.role,
        )
        request.setHeader(b"content-type", b"image/svg+xml; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        return body.encode("utf-8")


class Static(Resource):
    """The stylesheet and the script, from the package's data, read once."""

    TYPES = {".css": b"text/css; charset=utf-8", ".js": b"text/javascript; charset=utf-8"}

    def __init__(self):
        super().__init__()
        for child in STATIC.children():
            kind = self.TYPES.get(child.splitext()[1])
            if kind is not None:
                self.putChild(child.basename().encode(), StaticFile(child.getContent(), kind))


class StaticFile(Resource):
    isLeaf = True

    def __init__(self, data: bytes, kind: bytes):
        super().__init__()
        self.data = data
        self.kind = kind

    def render_GET(self, request):
        request.setHeader(b"content-type", self.kind)
        return self.data


# -- the console --


class Console:
    """
    What the pages share: the node (an L{INodeControl}), sessions, the login
    limiter and the twisted.cred portal over the users file.

    @param run: runs a blocking function (file reads and writes, password
        hashing) away from the reactor thread; returns a Deferred.
    @param clock: for session idle times and the login limiter.
    @param hash_run: runs a password hash (default: C{run}); one at a time.
    """

    def __init__(self, node, clock, run, events=None, hash_run=None):
        self.node = node
        self.server = node.status().server
        self.run = run
        self.events = events
        self.sessions = Sessions(clock, cookie=SESSION_COOKIE + b"_" + self.server.encode("ascii", "replace"))
        self.limiter = LoginLimiter(clock)
        self.hashing = defer.DeferredSemaphore(1)
        self.checker = UsersFileChecker(self.users_file, run=hash_run or run)
        self.portal = Portal(ConsoleRealm(), [self.checker])

    def users_file(self) -> Optional[str]:
        return self.node.status().settings.console_users

    def config_path(self) -> str:
        """The shared configuration file the node runs on."""
        return self.node.status().config.path

    def watch_users(self, clock, interval: float = USERS_CHECK_INTERVAL):
        """Every C{interval} seconds, end the sessions of users gone from the users file or with a new password."""
        from twisted.internet.task import LoopingCall

        self._users_watch = LoopingCall(self.check_users)
        self._users_watch.clock = clock
        self._users_watch.start(interval, now=False)

    def check_users(self) -> defer.Deferred:
        if not self.sessions.logged_in():
            return defer.succeed(None)  # nobody to check
        d = self.run(users_now, self.users_file())

        def apply(users):
            if users is None:
                return  # unreadable just now: the next check decides
            for session in self.sessions.logged_in():
                stored = users.get(session.user)
                if stored is None or (session.stamp is not None and stored != session.stamp):
                    self.sessions.discard(session)
                    log.info("console: ended a session of {user}: {why}", user=session.user,
                             why="no longer in the users file" if stored is None else "the password changed")

        d.addCallback(apply)
        d.addErrback(lambda failure: log.failure("console: checking the users file failed", failure))
        return d

    def read_config_text(self) -> defer.Deferred:
        def read(path):
            # Bytes, decoded as they are: no newline translation, so the digest
            # is the file's own and a CRLF file keeps its line endings.
            with open(path, "rb") as f:
                return f.read().decode("utf-8")

        return self.run(read, self.config_path())

    def check_whole(self, config):
        """Checks of a new configuration beyond its syntax, as a reload makes them: the listeners', then the node's."""
        from iwayfailover.listeners import check_listener_specs

        check_listener_specs(config)
        self.node.check_config(config)


def add_pages(root: GuardedRoot, console: Console) -> None:
    root.putChild(b"", StatusPage(console))
    root.putChild(b"listeners", ListenersPage(console))
    root.putChild(b"switchover", SwitchoverPage(console))
    root.putChild(b"settings", SettingsPage(console))
    root.putChild(b"log", LogPage(console))
    root.putChild(b"login", LoginPage(console))
    root.putChild(b"logout", LogoutPage(console))
    root.putChild(b"static", Static())
    charts = Resource()
    root.putChild(b"charts", charts)
    charts.putChild(b"heartbeat.svg", ChartResource(console))
