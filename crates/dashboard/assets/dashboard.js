// Mayfly dashboard: live updates by polling the dashboard's own endpoints.
// - [data-live=URL]: JSON whose string fields fill [data-field=NAME] inside,
//   whose `segments` move the progress bar's [data-segment=NAME] rects, and
//   whose `status_label`/`tone` restyle the [data-badge]; stops when `finished`.
// - [data-live-rows=URL]: one JSON of every run's progress by id, applied as
//   above to each [data-live-row] (by its data-run-id) until all have finished.
// - [data-fragment=URL]: markup that replaces the element's content while the
//   page's run is live.
// - [data-log-url=URL]: appends new log lines, resuming from data-cursor.
// A 401 from any of them means the token is gone: back to the sign-in page.
"use strict";

(function () {
  const POLL_MS = 1000;
  let runLive = document.querySelector("[data-live]") !== null;

  function toSignIn() {
    const next = location.pathname + location.search;
    location.assign("/sign-in?next=" + encodeURIComponent(next));
  }

  async function fetchOk(url, accept) {
    const response = await fetch(url, { credentials: "same-origin", headers: { Accept: accept } });
    if (response.status === 401) {
      toSignIn();
      throw new Error("signed out");
    }
    if (!response.ok) throw new Error(url + " answered " + response.status);
    return response;
  }

  function applyProgress(element, progress) {
    for (const [name, value] of Object.entries(progress)) {
      if (typeof value === "object") continue;
      element.querySelectorAll('[data-field="' + name + '"]').forEach((node) => {
        node.textContent = String(value);
      });
    }
    for (const [name, [x, width]] of Object.entries(progress.segments || {})) {
      element.querySelectorAll('[data-segment="' + name + '"]').forEach((rect) => {
        rect.setAttribute("x", x);
        rect.setAttribute("width", width);
      });
    }
    element.querySelectorAll("[data-badge]").forEach((badge) => {
      badge.className = "badge badge-" + progress.tone;
      badge.textContent = progress.status_label;
    });
  }

  function followProgress(element) {
    const url = element.dataset.live;
    const tick = async () => {
      try {
        const progress = await (await fetchOk(url, "application/json")).json();
        applyProgress(element, progress);
        if (progress.finished) {
          runLive = false;
          element.removeAttribute("data-live");
          element.classList.add("just-finished");
          return;
        }
      } catch (error) {
        if (error.message === "signed out") return;
      }
      setTimeout(tick, POLL_MS);
    };
    setTimeout(tick, POLL_MS);
  }

  function followRows(table) {
    const url = table.dataset.liveRows;
    const tick = async () => {
      try {
        const answer = await (await fetchOk(url, "application/json")).json();
        table.querySelectorAll("[data-live-row]").forEach((row) => {
          const progress = answer.runs[row.dataset.runId];
          if (!progress) return;
          applyProgress(row, progress);
          if (progress.finished) row.removeAttribute("data-live-row");
        });
      } catch (error) {
        if (error.message === "signed out") return;
      }
      if (table.querySelector("[data-live-row]")) setTimeout(tick, POLL_MS);
    };
    setTimeout(tick, POLL_MS);
  }

  function followFragment(element) {
    const url = element.dataset.fragment;
    const tick = async () => {
      const lastRound = !runLive;
      try {
        element.innerHTML = await (await fetchOk(url, "text/html, image/svg+xml")).text();
      } catch (error) {
        if (error.message === "signed out") return;
      }
      if (!lastRound) setTimeout(tick, 2 * POLL_MS);
    };
    setTimeout(tick, 2 * POLL_MS);
  }

  function followLog(log) {
    const url = log.dataset.logUrl;
    let cursor = log.dataset.cursor || "";
    const status = document.querySelector("[data-log-status]");
    const count = document.querySelector("[data-log-count]");
    log.scrollTop = log.scrollHeight;
    const tick = async () => {
      let finished = false;
      try {
        const answer = await (await fetchOk(url + "?cursor=" + encodeURIComponent(cursor), "application/json")).json();
        const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
        for (const line of answer.lines) {
          const row = document.createElement("span");
          row.className = "line fresh";
          const worker = document.createElement("span");
          worker.className = "worker";
          worker.textContent = line.worker;
          row.append(worker, " " + line.text + "\n");
          log.append(row);
        }
        if (count) count.textContent = String(log.querySelectorAll(".line").length);
        if (atBottom) log.scrollTop = log.scrollHeight;
        cursor = answer.cursor;
        finished = answer.finished;
      } catch (error) {
        if (error.message === "signed out") return;
      }
      if (finished) {
        if (status) status.textContent = "the run has ended; its logs are sealed";
        return;
      }
      setTimeout(tick, POLL_MS);
    };
    setTimeout(tick, POLL_MS);
  }

  document.querySelectorAll("[data-live]").forEach(followProgress);
  document.querySelectorAll("[data-live-rows]").forEach(followRows);
  document.querySelectorAll("[data-fragment]").forEach(followFragment);
  document.querySelectorAll("[data-log-url]").forEach(followLog);
})();
