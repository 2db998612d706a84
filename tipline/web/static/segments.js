// The reply box's counter: characters, SMS segments and encoding of the reply as it will be sent.
// Counts exactly like tipline/core/segments.py (tests/test_segments.py runs both on the same texts):
// GSM-7 when every character is in the GSM 03.38 alphabet (extension characters count 2), else UCS-2
// in UTF-16 code units; 160/153 septets or 70/67 units a segment; a character is never split.
(function (root) {
  "use strict";
  var BASIC = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?" +
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
  var EXTENSION = "^{}\\[~]|€\f";
  var SINGLE = { "GSM-7": 160, "UCS-2": 70 };
  var PART = { "GSM-7": 153, "UCS-2": 67 };
  // Typographic characters replaced before an SMS is sent (segments.GSM_EQUIVALENTS).
  var EQUIVALENTS = [
    [/[\u2018\u2019\u201a\u201b\u2032\u00b4\u0060]/g, "'"],
    [/[\u201c\u201d\u201e\u201f\u2033\u00ab\u00bb]/g, '"'],
    [/[\u2010\u2011\u2012\u2013\u2014\u2015\u2212]/g, "-"],
    [/\u2026/g, "..."],
    [/[\u00a0\u2007\u202f\u2002\u2003\u2009\u200a]/g, " "],
    [/[\u00ad\u200b\u200c\u200d\u2060\ufeff]/g, ""]
  ];

  function toGsm(text) {
    return EQUIVALENTS.reduce(function (t, pair) { return t.replace(pair[0], pair[1]); }, text);
  }

  function count(text) {
    var chars = Array.from(text); // code points, as Python's len()
    var gsm = chars.every(function (ch) { return BASIC.indexOf(ch) >= 0 || EXTENSION.indexOf(ch) >= 0; });
    var encoding = gsm ? "GSM-7" : "UCS-2";
    function units(ch) { return gsm ? (EXTENSION.indexOf(ch) >= 0 ? 2 : 1) : (ch.codePointAt(0) > 0xffff ? 2 : 1); }
    var total = chars.reduce(function (n, ch) { return n + units(ch); }, 0);
    var segments = 0;
    if (chars.length && total <= SINGLE[encoding]) {
      segments = 1;
    } else if (chars.length) {
      var room = 0;
      chars.forEach(function (ch) {
        var need = units(ch);
        if (need > room) { segments += 1; room = PART[encoding]; }
        room -= need;
      });
    }
    return { encoding: encoding, characters: chars.length, units: total, segments: segments };
  }

  root.tiplineSegments = { count: count, toGsm: toGsm };

  var counter = document.getElementById("reply-counter");
  if (!counter) return;
  var box = document.getElementById(counter.dataset.for);
  var sms = counter.dataset.sms === "1";
  function update() {
    var text = box.value;
    var sent = counter.dataset.prefix + (sms ? toGsm(text) : text);
    var c = count(sent);
    var line = Array.from(text).length + " characters";
    if (sms) line += " · " + c.segments + (c.segments === 1 ? " SMS segment" : " SMS segments") + " · " + c.encoding;
    counter.textContent = line;
    counter.dataset.encoding = c.encoding;
    counter.dataset.segments = c.segments;
  }
  box.addEventListener("input", update);
  update();
})(window);
