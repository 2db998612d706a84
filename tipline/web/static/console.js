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
      if (String(data.newest) !== body.dataset.newest || String(data.messages) !== body.dataset.messages) {
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
    var labels = { tipster: "Tipster", bot: "Bot", agency: "Reply", note: "Internal note" };
    poll(function () { return body.dataset.threadUrl + "?after=" + encodeURIComponent(body.dataset.lastSeq); }, function (data) {
      data.entries.forEach(function (e) {
        var li = document.createElement("li");
        li.className = "entry " + e.kind + " fresh";
        li.dataset.seq = e.seq;
        var who = document.createElement("span");
        who.className = "who";
        who.textContent = labels[e.kind] || e.kind;
        li.appendChild(who);
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
})();
