// The sandbox chat: post messages as JSON, show the bot's replies, poll for detectives' replies.
(function () {
  "use strict";
  const chat = document.getElementById("chat");
  const form = document.getElementById("compose");
  const input = document.getElementById("text");
  const seen = new Set();

  function add(kind, text) {
    const item = document.createElement("li");
    item.className = kind;
    item.textContent = text; // text, never HTML
    chat.appendChild(item);
    item.scrollIntoView({ block: "end" });
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
      data.replies.forEach(function (reply) { add("bot", reply); });
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

  const photo = document.getElementById("photo");
  photo.addEventListener("change", function () {
    const file = photo.files && photo.files[0];
    if (!file) return;
    photo.value = "";
    add("me", "[photo: " + Math.round(file.size / 1024) + " KB]");
    send("/sandbox/photos", { "Content-Type": file.type || "application/octet-stream", "X-Sandbox-Id": newId() }, file);
  });

  async function poll() {
    try {
      const response = await fetch("/sandbox/inbox", { credentials: "same-origin" });
      if (response.ok) {
        const data = await response.json();
        data.messages.forEach(function (message) {
          if (!seen.has(message.id)) { seen.add(message.id); add("agency", message.text); }
        });
      }
    } catch (error) { /* offline for a moment: try again later */ }
    setTimeout(poll, 3000);
  }
  poll();
})();
