// The builds page's live parts: a running build's log grows in place (the
// page reloads when the build's status changes), and the builds list
// refreshes itself while builds are going. Nothing else.
"use strict";
(function () {
  const terminal = (s) => s === "succeeded" || s === "failed" || s === "canceled";

  const log = document.getElementById("log");
  if (log && !terminal(log.dataset.status)) {
    const status = document.getElementById("status");
    let offset = Number(log.dataset.offset) || 0;
    const poll = async () => {
      let next = 1000;
      try {
        const resp = await fetch(log.dataset.url + "?offset=" + offset, { credentials: "same-origin", cache: "no-store" });
        if (resp.ok) {
          const text = await resp.text();
          const stick = log.scrollTop + log.clientHeight >= log.scrollHeight - 20;
          if (text) log.append(text);
          offset = Number(resp.headers.get("X-Log-Offset")) || offset;
          const st = resp.headers.get("X-Build-Status");
          if (st && status) { status.textContent = st; status.className = "badge " + st; }
          if (stick && text) log.scrollTop = log.scrollHeight;
          if (st && st !== log.dataset.status) {
            // The record changed (an attempt started, or the build ended
            // with its artifacts and times): show it as it is now.
            window.location.reload();
            return;
          }
        } else {
          next = 5000;
        }
      } catch (e) {
        next = 5000; // the API restarted or the network blinked: keep trying
      }
      setTimeout(poll, next);
    };
    setTimeout(poll, 1000);
  }

  const index = document.getElementById("index");
  if (index && index.dataset.refresh) {
    setTimeout(() => window.location.reload(), Number(index.dataset.refresh) * 1000);
  }
})();
