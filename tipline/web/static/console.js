// Live updates for the review console. Everything from the server is inserted as text, never HTML.
(function () {
  "use strict";
  var body = document.body;
  var POLL_MS = 5000;

  function typing() {
    var el = document.activeElement;
    return el && (el.tagName === "TEXTAREA" || el.tagName === "INPUT" || el.tagName === "SELECT") && el.value;
  }

  function poll(url, handle) {
    function tick() {
      fetch(url(), { credentials: "same-origin", headers: { "Accept": "application/json" } })
        .then(function (r) {
          if (r.status === 401) { window.location.reload(); return null; } // signed out: show the sign-in page
          return r.ok ? r.json() : null;
        })
        .then(function (data) { if (data) handle(data); })
        .catch(function () { /* offline for a moment */ })
        .finally(function () { setTimeout(tick, POLL_MS); });
    }
    setTimeout(tick, POLL_MS);
  }

  if (body.dataset.page === "tips") {
    poll(function () { return body.dataset.changesUrl; }, function (data) {
      if (String(data.newest) !== body.dataset.newest || String(data.messages) !== body.dataset.messages ||
          String(data.pinned) !== body.dataset.pinned) {
        if (typing()) {
          document.getElementById("live-notice").classList.remove("hidden");
        } else {
          window.location.reload();
        }
      }
    });
  }

  if (body.dataset.page === "tip") {
    var thread = document.getElementById("thread");
    poll(function () { return body.dataset.threadUrl + "?after=" + encodeURIComponent(body.dataset.lastSeq); }, function (data) {
      data.entries.forEach(function (e) {
        var li = document.createElement("li");
        li.className = "entry " + e.kind + " fresh";
        li.dataset.seq = e.seq;
        // Drawn like the entries of the page: who (alias or author), relative and absolute time, delivery.
        var who = document.createElement("span");
        who.className = "who";
        who.textContent = e.who;
        li.appendChild(who);
        var when = document.createElement("span");
        when.className = "when";
        when.textContent = e.age + " ";
        var abs = document.createElement("span");
        abs.className = "abs";
        abs.textContent = e.local;
        when.appendChild(abs);
        li.appendChild(when);
        if (e.kind === "agency") {
          var d = document.createElement("span");
          d.className = "delivery";
          d.dataset.deliveryFor = e.seq;
          d.textContent = e.delivery || "queued";
          li.appendChild(d);
        }
        var p = document.createElement("p");
        p.className = "text";
        p.textContent = e.text;
        li.appendChild(p);
        thread.appendChild(li);
        body.dataset.lastSeq = e.seq;
      });
      Object.keys(data.deliveries).forEach(function (seq) {
        var el = document.querySelector('[data-delivery-for="' + seq + '"]');
        if (el && data.deliveries[seq]) el.textContent = data.deliveries[seq];
      });
      // A photo finished (or gave up) since the page was drawn, or arrived as a new entry: redraw.
      var photoChanged = Object.keys(data.photos || {}).some(function (seq) {
        var el = document.querySelector('[data-photo-for="' + seq + '"]');
        return !el || el.dataset.photoState !== data.photos[seq];
      });
      if (photoChanged) {
        if (typing()) {
          document.getElementById("live-notice").classList.remove("hidden");
        } else {
          window.location.reload();
        }
      }
    });
  }

  // Alerts (issue 13 part 2). The tab title counts tips that arrived since the detective opened the
  // list: the list reloads itself when tips arrive, so the starting point is kept for the tab
  // (sessionStorage) and moves only when the list is opened anew or the tab is looked at again.
  // Desktop notifications are offered by a button (permission is asked on that click, never on
  // load) and say "New tip" or "Urgent tip" with the reference: nothing a tipster wrote.
  var alertsBar = document.getElementById("alerts-bar");
  if (alertsBar && body.dataset.page === "tips") {
    var store = window.sessionStorage;
    var SEEN = "tipline.alerts.seen";
    var NOTIFIED = "tipline.alerts.notified";
    var baseTitle = document.title;
    var offer = document.getElementById("notify-offer");
    var notifyState = document.getElementById("notify-state");
    var canNotify = "Notification" in window;
    var newest = -1;
    var navigation = (performance.getEntriesByType && performance.getEntriesByType("navigation")[0]) || {};
    if (navigation.type !== "reload") store.removeItem(SEEN); // opened anew: count from now

    var stored = function (key) { var v = store.getItem(key); return v === null ? -1 : parseInt(v, 10); };

    var showPermission = function () {
      offer.hidden = Notification.permission !== "default";
      notifyState.textContent = { granted: "Desktop notifications are on.",
        denied: "Desktop notifications are blocked in this browser's settings." }[Notification.permission] || "";
    };
    if (canNotify) {
      showPermission();
      offer.addEventListener("click", function () {
        var asked = Notification.requestPermission(showPermission);
        if (asked && asked.then) asked.then(showPermission);
      });
    }

    var countFresh = function (data) {
      newest = data.newest;
      if (stored(SEEN) < 0) store.setItem(SEEN, String(newest));
      if (stored(NOTIFIED) < 0) store.setItem(NOTIFIED, String(newest));
      var seen = stored(SEEN);
      var notified = stored(NOTIFIED);
      var count = data.fresh.filter(function (t) { return t.id > seen; }).length;
      document.title = count ? "(" + count + ") " + baseTitle : baseTitle;
      if (canNotify && Notification.permission === "granted") {
        data.fresh.filter(function (t) { return t.id > notified; }).reverse().forEach(function (t) {
          new Notification(t.urgent ? "Urgent tip" : "New tip", { body: t.reference, tag: t.reference });
        });
      }
      store.setItem(NOTIFIED, String(Math.max(notified, newest)));
    };
    var freshUrl = function () {
      var since = Math.min(stored(SEEN), stored(NOTIFIED));
      return alertsBar.dataset.freshUrl + "?since=" + (since < 0 ? 0 : since);
    };
    document.addEventListener("visibilitychange", function () {
      if (document.visibilityState === "visible" && newest >= 0) {
        store.setItem(SEEN, String(newest));
        document.title = baseTitle;
      }
    });
    fetch(freshUrl(), { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (data) { if (data) countFresh(data); })
      .catch(function () { /* offline for a moment */ });
    poll(freshUrl, countFresh);
  }

})();
