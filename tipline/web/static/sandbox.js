// The sandbox chat: post messages as JSON, show the bot's replies, poll for detectives' replies.
// The conversation is kept by the server per browser cookie (/sandbox/history), so a reload shows it again.
(function () {
  "use strict";
  const chat = document.getElementById("chat");
  const form = document.getElementById("compose");
  const input = document.getElementById("text");
  const maxBytes = Number(document.body.dataset.maxBytes || "0");
  const seen = new Set();

  function add(kind, text) {
    const item = document.createElement("li");
    item.className = kind;
    item.textContent = text; // text, never HTML
    chat.appendChild(item);
    item.scrollIntoView({ block: "end" });
  }

  // An entry the server kept (with its id): shown once, whether it comes from a send, the history or the inbox.
  function show(message, display) {
    if (seen.has(message.id)) return;
    seen.add(message.id);
    if (display) add(message.who || "agency", message.text);
  }

  function newId() {
    return (crypto.randomUUID && crypto.randomUUID()) || String(Date.now()) + "-" + Math.random().toString(16).slice(2);
  }

  // Send to the tip line and show the bot's answers (the id makes a retried send count once).
  async function send(url, headers, body) {
    try {
      const response = await fetch(url, { method: "POST", headers: headers, body: body, credentials: "same-origin" });
      if (!response.ok) { add("error", "Could not send: " + (await response.text())); return; }
      const data = await response.json();
      if (data.messages && data.messages.length) {
        // What was sent is on the page already; the bot's answers are not.
        data.messages.forEach(function (message) { show(message, message.who === "bot"); });
      } else {
        data.replies.forEach(function (reply) { add("bot", reply); });
      }
    } catch (error) {
      add("error", "Could not reach the tip line. Try again.");
    }
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    const text = input.value;
    if (!text.trim()) return;
    input.value = "";
    add("me", text);
    send("/sandbox/messages", { "Content-Type": "application/json" }, JSON.stringify({ text: text, id: newId() }));
  });

  // Enter sends, as in a chat app; Shift+Enter starts a new line (and Enter while an input method composes does nothing).
  input.addEventListener("keydown", function (event) {
    if (event.key !== "Enter" || event.shiftKey || event.isComposing) return;
    event.preventDefault();
    form.requestSubmit();
  });

  const photo = document.getElementById("photo");
  photo.addEventListener("change", function () {
    const file = photo.files && photo.files[0];
    if (!file) return;
    photo.value = "";
    const what = file.type.indexOf("image/") === 0 ? "photo" : "file";
    add("me", "[" + what + ": " + Math.max(1, Math.round(file.size / 1024)) + " KB]");
    const headers = { "Content-Type": file.type || "application/octet-stream", "X-Sandbox-Id": newId() };
    if (maxBytes && file.size > maxBytes) {
      // Too large to send: say how large, as a provider would, and let the tip line refuse it.
      headers["X-Sandbox-Size"] = String(file.size);
      send("/sandbox/photos", headers, "");
    } else {
      send("/sandbox/photos", headers, file);
    }
  });

  async function poll() {
    try {
      const response = await fetch("/sandbox/inbox", { credentials: "same-origin" });
      if (response.ok) {
        const data = await response.json();
        data.messages.forEach(function (message) { show(message, true); });
      }
    } catch (error) { /* offline for a moment: try again later */ }
    setTimeout(poll, 3000);
  }

  // "Start over": the server forgets this conversation and gives this browser a new identity.
  document.getElementById("restart").addEventListener("submit", async function (event) {
    event.preventDefault();
    try {
      await fetch("/sandbox/restart", { method: "POST", credentials: "same-origin" });
    } finally {
      window.location.reload();
    }
  });

  // The conversation so far (after a reload), then the detectives' replies as they come.
  async function start() {
    try {
      const response = await fetch("/sandbox/history", { credentials: "same-origin" });
      if (response.ok) {
        const data = await response.json();
        data.messages.forEach(function (message) { show(message, true); });
      }
    } catch (error) { /* the page still works; the history shows at the next reload */ }
    poll();
  }
  start();
})();
