// asyncpool dashboard: live overview by polling, confirmations, "select all".
// Data goes into the page with textContent and setAttribute only, never as HTML.
"use strict";

(function () {
  const POLL_MS = 1000;

  function setText(el, text) {
    if (el && el.textContent !== text) el.textContent = text;
  }

  // Rows of a table body: one <tr> per item, one <td> per column named in the head.
  function renderRows(tbody, items) {
    const fields = Array.from(tbody.closest("table").querySelectorAll("thead th[data-field]"))
      .map((th) => th.dataset.field);
    const testid = tbody.dataset.rowTestid;
    while (tbody.rows.length > items.length) tbody.deleteRow(-1);
    items.forEach((item, i) => {
      let row = tbody.rows[i];
      if (!row) {
        row = tbody.insertRow(-1);
        row.setAttribute("data-testid", testid);
        fields.forEach((field) => {
          const cell = row.insertCell(-1);
          cell.setAttribute("data-field", field);
        });
      }
      fields.forEach((field, j) => setText(row.cells[j], String(item[field] ?? "")));
    });
  }

  function drawChart(svg, samples, peakEl) {
    const line = svg.querySelector("polyline");
    const box = svg.viewBox.baseVal;
    const peak = Math.max(1, ...samples);
    const step = samples.length > 1 ? box.width / (600 - 1) : 0;
    const offset = box.width - step * (samples.length - 1);
    const points = samples.map((v, i) => {
      const x = offset + i * step;
      const y = box.height - (v / peak) * (box.height - 4);
      return x.toFixed(1) + "," + y.toFixed(1);
    });
    line.setAttribute("points", points.join(" "));
    setText(peakEl, (Math.round(Math.max(0, ...samples) * 10) / 10) + "/s");
  }

  function startOverview(root) {
    const url = root.dataset.overviewUrl;
    const stale = root.querySelector("[data-testid=stale]");
    const chart = root.querySelector("[data-testid=throughput-chart]");
    const peak = root.querySelector("[data-live=peak]");
    const at = root.querySelector("[data-live=at]");
    const noWorkers = root.querySelector("[data-testid=no-workers]");

    function render(data) {
      Object.entries(data.totals).forEach(([field, text]) => {
        setText(root.querySelector('[data-total="' + CSS.escape(field) + '"]'), text);
      });
      renderRows(root.querySelector("tbody[data-rows=lanes]"), data.lanes);
      renderRows(root.querySelector("tbody[data-rows=workers]"), data.workers);
      noWorkers.hidden = data.workers.length > 0;
      drawChart(chart, data.throughput, peak);
      setText(at, data.at);
    }

    async function poll() {
      if (document.visibilityState === "visible") {
        try {
          const response = await fetch(url, {
            headers: { Accept: "application/json" },
            credentials: "same-origin",
            cache: "no-store",
          });
          if (!response.ok) throw new Error("HTTP " + response.status);
          render(await response.json());
          stale.hidden = true;
        } catch (error) {
          stale.hidden = false;
        }
      }
      // The next poll is scheduled once this one is over: slow answers never pile up.
      window.setTimeout(poll, POLL_MS);
    }
    poll();
  }

  function wireForms() {
    document.addEventListener("click", (event) => {
      const button = event.target.closest("button[data-confirm]");
      if (button && !button.disabled && !window.confirm(button.dataset.confirm)) {
        event.preventDefault();
      }
    });
    document.querySelectorAll("[data-select-all]").forEach((box) => {
      box.addEventListener("change", () => {
        box.closest("form").querySelectorAll("input[name=letter]").forEach((other) => {
          other.checked = box.checked;
        });
      });
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    wireForms();
    const overview = document.querySelector("[data-overview-url]");
    if (overview) startOverview(overview);
  });
})();
