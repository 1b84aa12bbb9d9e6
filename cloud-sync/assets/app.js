// The collector's dashboard: fleet, device and gateway pages over the JSON
// query API (/v1/...), routed by the URL hash and refreshed every 10 s.
// Plain JS without a build step; charts are drawn by the vendored uPlot.
//
// When the collector needs a read token, any 401/403 shows the sign-in form
// (form#login); the token is kept in sessionStorage (this tab only) and sent
// as `Authorization: Bearer` on every API fetch.
//
// For tests and scripts: each fleet row is tr[data-device="{id}"] with
// data-stale="true|false"; each chart is section.chart[data-measurement]
// and gets data-points="N" (buckets with a numeric value) once drawn.
"use strict";

(function () {
  /** A device or gateway not heard from for longer than this is stale. */
  const STALE_AFTER_S = 5 * 60;
  const REFRESH_MS = 10_000;
  /** Requests the fleet page keeps in flight while it fetches latest values. */
  const CONCURRENCY = 6;
  /**
   * Chart ranges. Each step makes 300 to 360 buckets, so a month costs the
   * store and the browser what an hour does.
   */
  const RANGES = [
    { key: "5m", label: "5 min", seconds: 300, step: 1 },
    { key: "1h", label: "hour", seconds: 3600, step: 10 },
    { key: "1d", label: "day", seconds: 86_400, step: 300 },
    { key: "1w", label: "week", seconds: 604_800, step: 1800 },
    { key: "30d", label: "month", seconds: 2_592_000, step: 7200 },
  ];
  const DEFAULT_RANGE = "1h";
  /**
   * The API has no "latest value" query, so the fleet page asks for the
   * aggregate of the day before the device was last seen in buckets wider
   * than that day and keeps the newest bucket's `last`: bounded work per
   * refresh, whatever the length of the series. A device whose clock lags
   * its gateway's by more than a day shows no latest value.
   */
  const LATEST_WINDOW_S = 86_400;
  const LATEST_STEP_S = 1e6;
  /** SenML units (RFC 8428 §12.1) shown in a friendlier spelling. */
  const UNIT_LABELS = { Cel: "°C" };

  /** sessionStorage key of the read token. */
  const TOKEN_KEY = "cloud-sync-read-token";

  const view = document.getElementById("view");
  const updated = document.getElementById("updated");
  const errorBox = document.getElementById("error");
  const loginForm = document.getElementById("login");
  const loginToken = document.getElementById("login-token");
  const loginMessage = document.getElementById("login-message");
  const logoutButton = document.getElementById("logout");

  /** The API refused the token (or its absence): the user must sign in. */
  class AuthError extends Error {}

  // ---- helpers -----------------------------------------------------------

  /** An element with attributes and children; text is never parsed as HTML. */
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "class") el.className = value;
      else el.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === undefined || child === null || child === false) continue;
      el.append(child instanceof Node ? child : String(child));
    }
    return el;
  }

  function storedToken() {
    try {
      return sessionStorage.getItem(TOKEN_KEY);
    } catch (_) {
      return null; // storage disabled: every visit signs in again
    }
  }

  /**
   * GETs a path of the query API; throws with the API's error message, an
   * AuthError on 401/403.
   */
  async function api(path) {
    const headers = { accept: "application/json" };
    const token = storedToken();
    if (token) headers.authorization = `Bearer ${token}`;
    const response = await fetch(path, { headers });
    const body = await response.json().catch(() => null);
    if (!response.ok) {
      const message = body && body.error ? body.error.message : response.statusText;
      if (response.status === 401 || response.status === 403) throw new AuthError(message);
      throw new Error(`${path}: ${response.status} ${message}`);
    }
    return body;
  }

  function showLogin(message) {
    loginMessage.textContent = storedToken()
      ? `The token was refused: ${message}.`
      : "This collector needs a read token (cloud-sync tokens add --read).";
    loginForm.hidden = false;
    view.hidden = true;
    logoutButton.hidden = true;
    loginToken.focus();
  }

  function hideLogin() {
    loginForm.hidden = true;
    view.hidden = false;
    logoutButton.hidden = !storedToken();
  }

  loginForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const token = loginToken.value.trim();
    if (!token) return;
    try {
      sessionStorage.setItem(TOKEN_KEY, token);
    } catch (_) {
      // Without storage the token cannot outlive this call: nothing to do.
    }
    loginToken.value = "";
    hideLogin();
    navigate();
  });

  logoutButton.addEventListener("click", () => {
    try {
      sessionStorage.removeItem(TOKEN_KEY);
    } catch (_) {
      // nothing stored
    }
    navigate();
  });

  /** Runs `task` over `items` with at most CONCURRENCY in flight. */
  async function eachLimited(items, task) {
    let next = 0;
    const worker = async () => {
      while (next < items.length) {
        const item = items[next++];
        await task(item);
      }
    };
    await Promise.all(Array.from({ length: Math.min(CONCURRENCY, items.length) }, worker));
  }

  const nowSeconds = () => Date.now() / 1000;
  const pad = (n) => String(n).padStart(2, "0");

  /** Local time, `YYYY-MM-DD HH:MM:SS`. */
  function formatTime(seconds) {
    const d = new Date(seconds * 1000);
    return (
      `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
      `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`
    );
  }

  function formatAge(seconds) {
    if (seconds < -5) return "in the future (clock skew)";
    if (seconds < 60) return `${Math.max(0, Math.floor(seconds))} s ago`;
    if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
    if (seconds < 2 * 86_400) return `${Math.floor(seconds / 3600)} h ago`;
    return `${Math.floor(seconds / 86_400)} d ago`;
  }

  const numbers = new Intl.NumberFormat("en", { maximumFractionDigits: 3 });
  const unitLabel = (unit) => (unit ? UNIT_LABELS[unit] || unit : "");

  function formatValue(value, unit) {
    if (value === null || value === undefined) return "—";
    let text;
    if (typeof value === "number") text = numbers.format(value);
    else if (typeof value === "string" && value.length > 24) text = value.slice(0, 23) + "…";
    else text = String(value);
    return unit ? `${text} ${unitLabel(unit)}` : text;
  }

  const isStale = (lastSeen, now) => now - lastSeen > STALE_AFTER_S;
  const deviceHref = (id, range) =>
    `#/devices/${encodeURIComponent(id)}` + (range ? `?range=${range}` : "");
  const seriesPath = (id, kind, name) =>
    `v1/devices/${encodeURIComponent(id)}/${kind}?name=${encodeURIComponent(name)}`;

  /** Unit of each series, from its first point; units do not change per page. */
  const units = new Map();
  function unitOf(id, name) {
    const key = `${id}\u0000${name}`;
    if (!units.has(key)) {
      const unit = api(`${seriesPath(id, "points", name)}&limit=1`)
        .then((body) => (body.points.length ? body.points[0].unit : null))
        .catch((err) => {
          units.delete(key);
          throw err;
        });
      units.set(key, unit);
    }
    return units.get(key);
  }

  function ageCell(seconds, now) {
    return h(
      "td",
      { title: `${formatTime(seconds)} (this browser's time zone)` },
      formatTime(seconds),
      h("span", { class: "age" }, formatAge(now - seconds)),
    );
  }

  function badge(stale) {
    return stale ? h("span", { class: "badge stale" }, "stale") : h("span", { class: "badge live" }, "live");
  }

  // ---- fleet: #/ -----------------------------------------------------------

  function fleetPage() {
    document.title = "Fleet · Edge telemetry";
    const summary = h("p", { class: "summary" }, "loading…");
    const body = h("tbody");
    const columns = ["Device", "Gateway", "Last seen", "Latest values", "Points", "Documents", "State"];
    view.replaceChildren(
      h("h1", {}, "Fleet"),
      summary,
      h("table", { id: "fleet" }, h("thead", {}, h("tr", {}, columns.map((c) => h("th", {}, c)))), body),
      h(
        "p",
        { class: "note" },
        `Stale: no reading received for more than ${STALE_AFTER_S / 60} minutes ` +
          "(the gateway's receive time against this browser's clock). " +
          "Latest values: the newest reading of each measurement in the day before the device was last seen.",
      ),
    );
    /** Latest values per device from the previous refresh, shown while new ones load. */
    const latest = new Map();

    function latestText(device) {
      const values = latest.get(device.device_id);
      if (!values) return device.measurements.length ? "…" : "—";
      return values.map((v) => `${v.name} ${formatValue(v.value, v.unit)}`).join(", ") || "—";
    }

    return {
      async refresh(live) {
        const { devices } = await api("v1/devices");
        if (!live()) return;
        const now = nowSeconds();
        const cells = new Map();
        const gateways = new Set(devices.map((d) => d.gateway_id));
        const stale = devices.filter((d) => isStale(d.last_seen, now)).length;
        summary.textContent =
          `${devices.length} device${devices.length === 1 ? "" : "s"} on ${gateways.size} ` +
          `gateway${gateways.size === 1 ? "" : "s"}, ${stale} stale`;
        body.replaceChildren(
          ...devices.map((d) => {
            const cell = h("td", { class: "values" }, latestText(d));
            cells.set(d.device_id, cell);
            const staleNow = isStale(d.last_seen, now);
            return h(
              "tr",
              { "data-device": d.device_id, "data-stale": String(staleNow), class: staleNow ? "stale" : null },
              h("td", {}, h("a", { href: deviceHref(d.device_id) }, d.device_id)),
              h("td", {}, d.gateway_id),
              ageCell(d.last_seen, now),
              cell,
              h("td", { class: "num" }, numbers.format(d.points)),
              h("td", { class: "num" }, numbers.format(d.documents)),
              h("td", {}, badge(staleNow)),
            );
          }),
        );
        if (!devices.length) {
          body.append(h("tr", {}, h("td", { colspan: columns.length, class: "empty" }, "No device has reported yet.")));
        }
        await eachLimited(devices, async (d) => {
          const values = await Promise.all(
            d.measurements.map(async (name) => {
              const from = d.last_seen - LATEST_WINDOW_S;
              const [agg, unit] = await Promise.all([
                api(`${seriesPath(d.device_id, "aggregates", name)}&from=${from}&step=${LATEST_STEP_S}`),
                unitOf(d.device_id, name),
              ]);
              const newest = agg.buckets[agg.buckets.length - 1];
              return { name, value: newest ? newest.last : null, unit };
            }),
          );
          if (!live()) return;
          latest.set(d.device_id, values);
          cells.get(d.device_id).textContent = latestText(d);
        });
      },
    };
  }

  // ---- device: #/devices/{id}?range=1h --------------------------------------

  function devicePage(id, rangeKey) {
    const range = RANGES.find((r) => r.key === rangeKey) || RANGES.find((r) => r.key === DEFAULT_RANGE);
    document.title = `${id} · Edge telemetry`;
    const meta = h("p", { class: "summary" }, "loading…");
    const ranges = h(
      "nav",
      { class: "ranges", "aria-label": "time range" },
      "Last ",
      RANGES.map((r) =>
        h("a", { href: deviceHref(id, r.key), class: r === range ? "active" : null, "data-range": r.key }, r.label),
      ),
    );
    const chartBox = h("div", { class: "charts" });
    view.replaceChildren(
      h("p", { class: "crumbs" }, h("a", { href: "#/" }, "Fleet"), " / device"),
      h("h1", {}, id),
      meta,
      ranges,
      chartBox,
    );
    /** Per measurement: its section element, the uPlot instance and its data. */
    const charts = new Map();
    /** The x range of every chart, read by uPlot's scale on each redraw. */
    const window_ = { from: 0, to: 0 };

    function chartFor(name, unit) {
      let chart = charts.get(name);
      if (chart) return chart;
      const section = h("section", { class: "chart", "data-measurement": name });
      const title = h("h2", {}, name, unit ? h("span", { class: "unit" }, ` (${unitLabel(unit)})`) : null);
      const caption = h("p", { class: "caption" });
      const plotBox = h("div", { class: "plot" });
      section.append(title, caption, plotBox);
      chartBox.append(section);
      chart = { section, caption, plotBox, plot: null, drawn: 0 };
      charts.set(name, chart);
      return chart;
    }

    function draw(chart, name, unit, buckets) {
      const xs = [];
      const mins = [];
      const maxs = [];
      const avgs = [];
      for (const b of buckets) {
        xs.push(b.start);
        mins.push(b.min);
        maxs.push(b.max);
        avgs.push(b.avg);
      }
      const numeric = avgs.filter((v) => v !== null).length;
      const boolean = buckets.some((b) => typeof b.last === "boolean");
      const newest = buckets[buckets.length - 1];
      chart.caption.textContent =
        `${buckets.length} buckets of ${range.step} s; line: average` +
        (boolean ? " (true = 1)" : "") +
        ", band: min to max" +
        (newest ? `; latest ${formatValue(newest.last, unit)}` : "") +
        (buckets.length && !numeric ? "; no numeric values to draw" : "") +
        (buckets.length ? "" : "; no readings in this range");
      const data = [xs, mins, maxs, avgs];
      chart.drawn = numeric;
      if (chart.plot) {
        chart.plot.setData(data);
        return;
      }
      const opts = {
        width: plotWidth(chart.plotBox),
        height: 220,
        cursor: { drag: { x: false, y: false } },
        scales: { x: { time: true, range: () => [window_.from, window_.to] } },
        series: [
          {},
          { label: "min", stroke: "#9db4cf", width: 1, points: { show: false } },
          { label: "max", stroke: "#9db4cf", width: 1, points: { show: false } },
          { label: "avg", stroke: "#1d5fa6", width: 2, points: { size: 5 } },
        ],
        bands: [{ series: [2, 1], fill: "rgba(29, 95, 166, 0.12)" }],
        axes: [{}, { label: unitLabel(unit) || name, size: 64 }],
        hooks: {
          // Set after each draw, so the attribute means "drawn", not "fetched".
          draw: [() => chart.section.setAttribute("data-points", String(chart.drawn))],
        },
      };
      chart.plot = new uPlot(opts, data, chart.plotBox);
    }

    function plotWidth(box) {
      return Math.max(320, box.clientWidth || chartBox.clientWidth || 800);
    }

    const onResize = () => {
      for (const chart of charts.values()) {
        if (chart.plot) chart.plot.setSize({ width: plotWidth(chart.plotBox), height: 220 });
      }
    };
    window.addEventListener("resize", onResize);

    return {
      destroy() {
        window.removeEventListener("resize", onResize);
        for (const chart of charts.values()) if (chart.plot) chart.plot.destroy();
      },
      async refresh(live) {
        // The API lists devices but has no single-device query.
        const { devices } = await api("v1/devices");
        if (!live()) return;
        const device = devices.find((d) => d.device_id === id);
        if (!device) {
          meta.textContent = "The collector has no data from this device.";
          return;
        }
        const now = nowSeconds();
        const staleNow = isStale(device.last_seen, now);
        meta.replaceChildren(
          badge(staleNow),
          ` gateway ${device.gateway_id} · last seen ${formatTime(device.last_seen)} (${formatAge(now - device.last_seen)})` +
            ` · ${numbers.format(device.points)} points · ${numbers.format(device.documents)} documents`,
        );
        // Buckets start at multiples of the step; so does the window.
        const from = Math.floor((now - range.seconds) / range.step) * range.step;
        const results = await Promise.all(
          device.measurements.map(async (name) => {
            const [agg, unit] = await Promise.all([
              api(`${seriesPath(id, "aggregates", name)}&from=${from}&step=${range.step}`),
              unitOf(id, name),
            ]);
            return { name, unit, buckets: agg.buckets };
          }),
        );
        if (!live()) return;
        window_.from = from;
        window_.to = now;
        for (const { name, unit, buckets } of results) draw(chartFor(name, unit), name, unit, buckets);
        if (!device.measurements.length) {
          chartBox.replaceChildren(h("p", { class: "empty" }, "This device has sent no SenML measurements."));
        }
      },
    };
  }

  // ---- gateways: #/gateways ------------------------------------------------

  function gatewaysPage() {
    document.title = "Gateways · Edge telemetry";
    const body = h("tbody");
    const columns = ["Gateway", "Spool", "Last sync", "Backlog", "Batches", "Envelopes accepted", "Duplicates", "State"];
    view.replaceChildren(
      h("h1", {}, "Gateways"),
      h("table", { id: "gateways" }, h("thead", {}, h("tr", {}, columns.map((c) => h("th", {}, c)))), body),
      h(
        "p",
        { class: "note" },
        "Backlog: readings the gateway still held when it sent its latest batch. The query API keeps no backlog " +
          "history, so the arrow compares with this page's previous refresh only. " +
          "Drop counters are not reported to the collector: each gateway exposes edge_spool_dropped_total and " +
          "edge_spool_rejected_full_total on its own admin /metrics. " +
          `Stale: no batch for more than ${STALE_AFTER_S / 60} minutes.`,
      ),
    );
    /** Backlog per gateway at the previous refresh. */
    const previous = new Map();

    function trend(gateway) {
      const before = previous.get(gateway.gateway_id);
      if (before === undefined || before === gateway.backlog) return null;
      const delta = gateway.backlog - before;
      return h(
        "span",
        { class: delta > 0 ? "trend up" : "trend down", title: "change since the previous refresh" },
        delta > 0 ? ` ▲ +${numbers.format(delta)}` : ` ▼ −${numbers.format(-delta)}`,
      );
    }

    return {
      async refresh(live) {
        const { gateways } = await api("v1/gateways");
        if (!live()) return;
        const now = nowSeconds();
        body.replaceChildren(
          ...gateways.map((g) => {
            const staleNow = isStale(g.last_sync, now);
            return h(
              "tr",
              { "data-gateway": g.gateway_id, class: staleNow ? "stale" : null },
              h("td", {}, g.gateway_id),
              h("td", { class: "mono", title: g.spool_id }, g.spool_id.slice(0, 8) + "…"),
              ageCell(g.last_sync, now),
              h("td", { class: "num" }, numbers.format(g.backlog), trend(g)),
              h("td", { class: "num" }, numbers.format(g.batches)),
              h("td", { class: "num" }, numbers.format(g.accepted)),
              h("td", { class: "num" }, numbers.format(g.duplicates)),
              h("td", {}, badge(staleNow)),
            );
          }),
        );
        if (!gateways.length) {
          body.append(h("tr", {}, h("td", { colspan: columns.length, class: "empty" }, "No gateway has synced yet.")));
        }
        for (const g of gateways) previous.set(g.gateway_id, g.backlog);
      },
    };
  }

  function missingPage(path) {
    document.title = "Not found · Edge telemetry";
    view.replaceChildren(h("h1", {}, "Not found"), h("p", {}, `No page at ${path}. `, h("a", { href: "#/" }, "Fleet")));
    return { async refresh() {} };
  }

  // ---- routing and refresh ---------------------------------------------------

  let page = null;
  /** Bumped on navigation; answers for an older page are dropped. */
  let generation = 0;

  function navigate() {
    generation += 1;
    if (page && page.destroy) page.destroy();
    const [path, query] = (location.hash.replace(/^#/, "") || "/").split("?");
    const params = new URLSearchParams(query || "");
    const device = path.match(/^\/devices\/([^/]+)$/);
    let section = null;
    if (path === "/") {
      page = fleetPage();
      section = "fleet";
    } else if (path === "/gateways") {
      page = gatewaysPage();
      section = "gateways";
    } else if (device) {
      page = devicePage(decodeURIComponent(device[1]), params.get("range"));
      section = "fleet";
    } else {
      page = missingPage(path);
    }
    for (const link of document.querySelectorAll("nav a[data-nav]")) {
      link.classList.toggle("active", link.dataset.nav === section);
    }
    refresh();
  }

  async function refresh() {
    const current = page;
    const mine = generation;
    if (current.busy) return;
    current.busy = true;
    const live = () => mine === generation;
    try {
      await current.refresh(live);
      if (live()) {
        hideLogin();
        errorBox.hidden = true;
        const at = new Date();
        updated.dateTime = at.toISOString();
        updated.textContent = formatTime(at.getTime() / 1000);
      }
    } catch (err) {
      if (live() && err instanceof AuthError) {
        errorBox.hidden = true;
        showLogin(err.message);
      } else if (live()) {
        errorBox.textContent = `refresh failed: ${err.message} · `;
        errorBox.hidden = false;
      }
    } finally {
      current.busy = false;
    }
  }

  window.addEventListener("hashchange", navigate);
  setInterval(refresh, REFRESH_MS);
  navigate();
})();
