// iwayfailover console: keeps the states on the page live by polling
// /api/status. No inline script anywhere (the Content-Security-Policy forbids it).
(function () {
  "use strict";
  var PERIOD = 2000;

  function setText(field, text) {
    document.querySelectorAll('[data-field="' + field + '"]').forEach(function (el) {
      el.textContent = text;
    });
  }

  function setBadge(el, prefix, value) {
    el.textContent = value;
    el.className = el.className.split(" ").filter(function (c) { return c.indexOf(prefix + "-") !== 0; }).join(" ");
    el.classList.add(prefix + "-" + value);
  }

  // The Status page's warning: a live node serving with FAILED listeners.
  function updateFailedBanner(listeners) {
    var banner = document.querySelector('[data-live="failed-listeners"]');
    if (!banner) { return; }
    var failed = Object.keys(listeners).filter(function (name) { return listeners[name].state === "FAILED"; });
    banner.hidden = failed.length === 0;
    setText("failed-count", String(failed.length));
    var list = banner.querySelector('[data-field="failed-list"]');
    while (list.firstChild) { list.removeChild(list.firstChild); }
    failed.forEach(function (name) {
      var entry = listeners[name];
      var item = document.createElement("li");
      var strong = document.createElement("strong");
      strong.textContent = name;
      item.appendChild(strong);
      var retry = entry.retry_in === undefined || entry.retry_in === null ? ""
        : " (automatic retry " + ((entry.retries || 0) + 1) + " in " + entry.retry_in.toFixed(1) + " s)";
      item.appendChild(document.createTextNode(": " + (entry.reason || "no reason given") + retry));
      list.appendChild(item);
    });
  }

  // Every page's warning while the node runs from its local copy of the configuration.
  function updateConfigBanner(config) {
    var banner = document.querySelector('[data-live="local-copy"]');
    if (!banner) { return; }
    banner.hidden = config.source !== "local copy";
    if (config.last_error) { setText("share-error", config.last_error); }
  }

  function update(status) {
    updateConfigBanner(status.config || {});
    document.querySelectorAll('[data-field="role"]').forEach(function (el) { setBadge(el, "role", status.role); });
    setText("epoch", String(status.epoch));
    setText("since", status.since);
    setText("cause", status.cause || "");
    var peer = status.peer || {};
    setText("peer-name", peer.name || "?");
    setText("peer-connected", peer.connected ? "connected" : "not connected");
    setText("peer-role", !peer.role ? "role unknown" : peer.connected ? peer.role : "last seen " + peer.role);
    var noBackup = document.querySelector('[data-live="no-backup"]');
    if (noBackup) { noBackup.hidden = !(status.role === "live" && !peer.connected); }
    setText("peer-age", peer.last_heartbeat_age === null || peer.last_heartbeat_age === undefined
      ? "never heard" : peer.last_heartbeat_age.toFixed(1) + " s ago");
    var coordinator = status.coordinator;
    if (coordinator) {
      setText("coordinator-connected", coordinator.connected ? "connected"
        : "not connected" + (coordinator.last_error ? " (" + coordinator.last_error + ")" : ""));
      setText("coordinator-live", coordinator.live === null ? "nobody holds the live role"
        : coordinator.live + (coordinator.live_epoch === null ? "" : " (epoch " + coordinator.live_epoch + ")"));
      setText("lease", (coordinator.lease_ttl === null ? "TTL not granted yet" : "TTL " + coordinator.lease_ttl + " s")
        + (coordinator.lease_left === null ? "; this node holds no live lease"
          : "; " + Math.max(0, coordinator.lease_left).toFixed(1) + " s left"));
      var members = status.members || {};
      Object.keys(members).forEach(function (name) {
        document.querySelectorAll('[data-member-role="' + name + '"]').forEach(function (el) {
          el.textContent = members[name].role + (members[name].may_campaign === false ? " (does not campaign)" : "");
        });
      });
    }
    var settings = status.settings || {};
    if (settings.threshold !== undefined) { setText("threshold", settings.threshold + " s"); }
    var listeners = status.listeners || {};
    updateFailedBanner(status.role === "live" ? listeners : {});
    Object.keys(listeners).forEach(function (name) {
      var entry = listeners[name];
      document.querySelectorAll('[data-listener="' + name + '"]').forEach(function (el) {
        setBadge(el, "state", entry.state);
      });
      document.querySelectorAll('[data-listener-since="' + name + '"]').forEach(function (el) {
        el.textContent = entry.since || "";
      });
      document.querySelectorAll('[data-listener-reason="' + name + '"]').forEach(function (el) {
        el.textContent = entry.reason || "";
      });
    });
  }

  // The Status page's chart of heartbeat gaps: drawn again by the node, swapped in once loaded (no flicker).
  function refreshChart() {
    var chart = document.querySelector('[data-live="chart"]');
    if (!chart) { return; }
    var next = new Image();
    next.onload = function () { chart.src = next.src; };
    next.src = "/charts/heartbeat.svg?t=" + Date.now();
  }

  function poll() {
    refreshChart();
    fetch("/api/status", { credentials: "same-origin", cache: "no-store" })
      .then(function (response) { return response.ok ? response.json() : null; })
      .then(function (status) { if (status) { update(status); } })
      .catch(function () {})
      .then(function () { setTimeout(poll, PERIOD); });
  }

  // Every page of a logged-in user shows the role in the left pane.
  if (document.querySelector('[data-field="role"]')) {
    setTimeout(poll, PERIOD);
  }
})();
