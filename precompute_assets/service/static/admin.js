// The admin pages work as plain forms and links; this adds progress in place and "select all".
"use strict";

const POLL_MS = 1000;

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function getJson(url) {
  const response = await fetch(url, { headers: { Accept: "application/json" } });
  return { ok: response.ok, body: await response.json() };
}

// "Refresh now": queue the run, then follow its status in the row, and swap in the refreshed row
// (or reload the page) when it succeeds.
async function refresh(form) {
  const status = form.querySelector(".status");
  const button = form.querySelector("button");
  button.disabled = true;
  status.textContent = "Queuing…";
  try {
    const response = await fetch(form.action, {
      method: "POST",
      body: new FormData(form),
      headers: { Accept: "application/json" },
    });
    const started = await response.json();
    if (!response.ok) {
      status.textContent = started.error || "Refresh refused.";
      return;
    }
    for (;;) {
      const { ok, body } = await getJson(`/admin/refreshes/${encodeURIComponent(started.run_id)}`);
      if (!ok) {
        status.textContent = body.error || "Progress unavailable.";
        return;
      }
      status.textContent = body.finished
        ? (body.status === "SUCCESS" ? "Refreshed." : `Refresh ${body.status.toLowerCase()}.`)
        : (body.status === "QUEUED" || body.status === "NOT_STARTED" ? "Queued…" : "Running…");
      if (body.finished) {
        if (body.status === "SUCCESS") {
          await refreshed(form);
        }
        return;
      }
      await sleep(POLL_MS);
    }
  } catch (error) {
    status.textContent = "The service did not answer: try again.";
  } finally {
    button.disabled = false;
  }
}

async function refreshed(form) {
  if (form.dataset.reload !== undefined) {
    window.location.assign(form.dataset.reload || window.location.href);
    return;
  }
  const row = form.closest("tr[data-row]");
  if (!row) {
    return;
  }
  const response = await fetch(row.dataset.row);
  if (response.ok) {
    const holder = document.createElement("tbody");
    holder.innerHTML = await response.text();
    const fresh = holder.querySelector("tr");
    fresh.querySelector(".status").textContent = "Refreshed.";
    row.replaceWith(fresh);
  }
}

// An action's page follows its run until it finishes, then shows the result.
async function followAction(element) {
  for (;;) {
    await sleep(POLL_MS);
    try {
      const { ok, body } = await getJson(element.dataset.actionStatus);
      if (ok && body.finished) {
        window.location.reload();
        return;
      }
      if (ok) {
        element.querySelector("strong").textContent =
          body.status.charAt(0).toUpperCase() + body.status.slice(1);
      }
    } catch (error) {
      // The service may be restarting: keep asking.
    }
  }
}

document.addEventListener("submit", (event) => {
  const form = event.target.closest("form[data-refresh]");
  if (form) {
    event.preventDefault();
    refresh(form);
  }
});

document.addEventListener("change", (event) => {
  if (event.target.matches("[data-select-all]")) {
    const form = event.target.closest("form");
    for (const box of form.querySelectorAll('input[name="entity"]')) {
      box.checked = event.target.checked;
    }
  }
});

document.addEventListener("DOMContentLoaded", () => {
  const action = document.querySelector("[data-action-status]");
  if (action) {
    followAction(action);
  }
});
