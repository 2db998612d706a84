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

  form.addEventListener("submit", async function (event) {
    event.preventDefault();
    const text = input.value;
    if (!text.trim()) return;
    input.value = "";
    add("me", text);
    const id = (crypto.randomUUID && crypto.randomUUID()) || String(Date.now()) + "-" + Math.random().toString(16).slice(2);
    try {
      const response = await fetch("/sandbox/messages", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ text: text, id: id }),
        credentials: "same-origin",
      });
      if (!response.ok) { add("error", "Could not send: " + (await response.text())); return; }
      const data = await response.json();
      data.replies.forEach(function (reply) { add("bot", reply); });
    } catch (error) {
      add("error", "Could not reach the tip line. Try again.");
    }
  });

  const photo = document.getElementById("photo");
  photo.addEventListener("change", async function () {
    const file = photo.files && photo.files[0];
    if (!file) return;
    photo.value = "";
    add("me", "[photo: " + Math.round(file.size / 1024) + " KB]");
    const id = (crypto.randomUUID && crypto.randomUUID()) || String(Date.now()) + "-" + Math.random().toString(16).slice(2);
    try {
      const response = await fetch("/sandbox/photos", {
        method: "POST",
        headers: { "Content-Type": file.type || "application/octet-stream", "X-Sandbox-Id": id },
        body: file,
        credentials: "same-origin",
      });
      if (!response.ok) { add("error", "Could not send: " + (await response.text())); return; }
      const data = await response.json();
      data.replies.forEach(function (reply) { add("bot", reply); });
    } catch (error) {
      add("error", "Could not reach the tip line. Try again.");
    }
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
