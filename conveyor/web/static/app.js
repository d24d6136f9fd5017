// Conveyor dashboard: live counters and small conveniences. No dependencies, no inline code.
"use strict";
(function () {
  const body = document.body;
  const base = body.dataset.base || "";
  const poll = Math.max(500, parseInt(body.dataset.poll || "5000", 10));
  const samples = [];
  let last = null;

  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  });
  document.querySelectorAll("input[data-check-all]").forEach(function (box) {
    box.addEventListener("change", function () {
      box.closest("form").querySelectorAll('input[name="jid"]').forEach(function (other) {
        other.checked = box.checked;
      });
    });
  });

  function getJSON(path) {
    return fetch(base + path, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) {
        if (response.status === 401) {
          window.location.assign(base + "/login?next=" + encodeURIComponent(window.location.pathname));
          throw new Error("logged out");
        }
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.json();
      });
  }

  function duration(seconds) {
    const units = [["d", 86400], ["h", 3600], ["m", 60]];
    for (const [unit, size] of units) if (seconds >= size) return Math.floor(seconds / size) + unit;
    return seconds >= 1 ? Math.round(seconds) + "s" : seconds.toFixed(2) + "s";
  }

  function drawLive(stats) {
    const chart = document.getElementById("live-chart");
    if (!chart) return;
    if (last !== null) {
      samples.push([Math.max(0, stats.processed - last.processed), Math.max(0, stats.failed - last.failed)]);
      if (samples.length > 60) samples.shift();
    }
    last = stats;
    const top = Math.max(1, ...samples.map(function (s) { return Math.max(s[0], s[1]); }));
    ["processed", "failed"].forEach(function (name, index) {
      const points = samples.map(function (s, i) {
        const x = 8 + (744 * i) / Math.max(1, samples.length - 1);
        const y = 112 - (104 * s[index]) / top;
        return x.toFixed(1) + "," + y.toFixed(1);
      });
      chart.querySelector("polyline." + name).setAttribute("points", points.join(" "));
    });
  }

  function updateStats(stats) {
    document.querySelectorAll("[data-stat]").forEach(function (el) {
      const value = stats[el.dataset.stat];
      if (typeof value === "number") el.textContent = value.toLocaleString("en");
    });
    document.querySelectorAll("[data-queue-size]").forEach(function (el) {
      el.textContent = String(stats.queues[el.dataset.queueSize] || 0);
    });
    drawLive(stats);
  }

  function updateQueues(queues) {
    const table = document.querySelector('table[data-live="queues"] tbody');
    if (!table) return;
    const seen = new Set();
    queues.forEach(function (q) {
      seen.add(q.name);
      let row = Array.from(table.rows).find(function (r) { return r.dataset.queue === q.name; });
      if (!row) {
        const empty = table.querySelector("tr.empty-row");
        if (empty) empty.remove();
        row = table.insertRow();
        row.dataset.queue = q.name;
        const link = document.createElement("a");
        link.href = base + "/queues/" + encodeURIComponent(q.name);
        link.textContent = q.name;
        row.insertCell().appendChild(link);
        ["size", "latency"].forEach(function (field) {
          const cell = row.insertCell();
          cell.className = "num";
          cell.dataset.field = field;
        });
        row.insertCell();
      }
      row.querySelector('[data-field="size"]').textContent = String(q.size);
      row.querySelector('[data-field="latency"]').textContent = q.size ? duration(q.latency) : "-";
    });
    Array.from(table.rows).forEach(function (row) {
      if (row.dataset.queue && !seen.has(row.dataset.queue)) {
        row.querySelector('[data-field="size"]').textContent = "0";
        row.querySelector('[data-field="latency"]').textContent = "-";
      }
    });
  }

  function updateOperation(op) {
    const selector = '[data-op-row="' + op.id + '"], [data-op-detail="' + op.id + '"]';
    document.querySelectorAll(selector).forEach(function (box) {
      box.querySelectorAll("[data-op-field]").forEach(function (el) {
        const value = op[el.dataset.opField];
        if (el.dataset.opField === "percent") el.textContent = String(Math.round(value));
        else if (value !== undefined && value !== null) el.textContent = String(value);
      });
      box.querySelectorAll("progress").forEach(function (bar) {
        bar.max = Math.max(1, op.total_items);
        bar.value = op.total_items ? op.processed_items : 1;
      });
      box.querySelectorAll("[data-op]").forEach(function (el) {
        el.dataset.finished = op.finished ? "true" : "false";
      });
    });
  }

  function updateOperations(list) {
    const seen = new Set(list.map(function (op) { return op.id; }));
    list.forEach(updateOperation);
    // Gone from the list: it completed and was deleted after its e-mail.
    document.querySelectorAll("[data-op-row]").forEach(function (row) {
      if (seen.has(row.dataset.opRow)) return;
      const bar = row.querySelector("progress");
      if (bar) bar.value = bar.max;
      const percent = row.querySelector('[data-op-field="percent"]');
      if (percent) percent.textContent = "100";
      const status = row.querySelector('[data-op-field="status"]');
      if (status) status.textContent = "finished";
    });
  }

  function refresh() {
    if (!document.querySelector("[data-stat]")) return;
    getJSON("/api/stats").then(updateStats).catch(function () {});
    if (document.querySelector('table[data-live="queues"]')) {
      getJSON("/api/queues").then(updateQueues).catch(function () {});
    }
    if (document.querySelector('table[data-live="operations"]')) {
      getJSON("/api/operations").then(updateOperations).catch(function () {});
    }
    document.querySelectorAll("[data-op-detail]").forEach(function (box) {
      if (box.querySelector('[data-finished="true"]')) return;
      getJSON("/api/operations/" + encodeURIComponent(box.dataset.opDetail) + "?per_page=1")
        .then(updateOperation).catch(function () {});
    });
  }

  refresh();
  window.setInterval(refresh, poll);
})();
