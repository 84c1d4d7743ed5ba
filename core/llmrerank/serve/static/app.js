// The llmrerank demo page: POST /v1/demo/search/stream, read the Server-Sent Events with
// fetch + ReadableStream, show the fast ranking at once, then move the results where the LLM
// puts them (FLIP animation; arrows say how far each one moved). No build step, no library.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { controller: null, started: 0, defaultPreset: null };
// What the page showed and when: the browser test reads this.
window.llmrerankDemo = { events: [] };

function escapeHtml(s) {
  return s.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}

function highlight(text, query) {
  const words = query.toLowerCase().match(/[a-z0-9]{3,}/g) || [];
  let html = escapeHtml(text);
  if (!words.length) return html;
  const stems = words.map((w) => w.replace(/(ing|ed|es|s)$/, "")).filter((w) => w.length >= 3);
  const re = new RegExp("\\b(" + stems.map((w) => w.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")).join("|") + ")\\w*", "gi");
  return html.replace(re, "<mark>$&</mark>");
}

function fmt(seconds) {
  if (seconds === undefined || seconds === null) return "–";
  return seconds < 1 ? `${Math.round(seconds * 1000)} ms` : `${seconds.toFixed(2)} s`;
}

// Parse "event: x\ndata: y" blocks; sse-starlette ends lines with \r\n.
function parseEvent(block) {
  const ev = { event: "message", data: "" };
  for (const line of block.split(/\r?\n/)) {
    if (line.startsWith(":")) continue;
    const i = line.indexOf(":");
    const field = i < 0 ? line : line.slice(0, i);
    const value = i < 0 ? "" : line.slice(i + 1).replace(/^ /, "");
    if (field === "event") ev.event = value;
    else if (field === "data") ev.data += (ev.data ? "\n" : "") + value;
  }
  return ev;
}

async function search(query, preset) {
  if (state.controller) state.controller.abort(); // the server cancels the abandoned work
  const controller = new AbortController();
  state.controller = controller;
  state.started = performance.now();
  window.llmrerankDemo.events = [];
  $("error").hidden = true;
  $("status").hidden = false;
  setPhase("working", "BM25…");
  $("results").dataset.phase = "loading";
  let response;
  try {
    response = await fetch("/v1/demo/search/stream", {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "text/event-stream" },
      // The server's own preset travels as null: its funnel may be configured beyond the preset.
      body: JSON.stringify({ query, preset: preset && preset !== state.defaultPreset ? preset : null, top_n: 10 }),
      signal: controller.signal,
    });
  } catch (err) {
    if (err.name !== "AbortError") showError(`network error: ${err.message}`);
    return;
  }
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try { message = (await response.json()).message || message; } catch (_) { /* not JSON */ }
    showError(message);
    return;
  }
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let m;
      while ((m = buffer.match(/\r?\n\r?\n/))) {
        const block = buffer.slice(0, m.index);
        buffer = buffer.slice(m.index + m[0].length);
        const ev = parseEvent(block);
        if (["fast", "partial", "final"].includes(ev.event) && state.controller === controller) {
          render(ev.event, JSON.parse(ev.data), query);
        }
      }
    }
  } catch (err) {
    if (err.name !== "AbortError") showError(`stream error: ${err.message}`);
  }
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = false;
  setPhase("done", "failed");
  $("results").dataset.phase = "error";
}

function setPhase(cls, text) {
  const el = $("phase");
  el.className = `phase ${cls}`;
  el.textContent = text;
}

function render(kind, body, query) {
  const prov = body.llmrerank;
  const list = $("results");
  // FLIP: remember where each item was, rebuild, then animate from the old place.
  const before = new Map();
  for (const li of list.children) before.set(li.dataset.id, li.getBoundingClientRect().top);
  const existing = new Map([...list.children].map((li) => [li.dataset.id, li]));
  const frag = document.createDocumentFragment();
  body.results.forEach((r, rank) => {
    const li = existing.get(r.id) || document.createElement("li");
    li.dataset.id = r.id;
    li.dataset.stage = r.stage;
    const moved = r.fast_rank - rank;
    let move = "";
    if (kind !== "fast" && moved > 0) move = `<span class="move up" title="moved up ${moved} by the LLM">▲${moved}</span>`;
    if (kind !== "fast" && moved < 0) move = `<span class="move down" title="moved down ${-moved} by the LLM">▼${-moved}</span>`;
    const badge = r.stage === "llm"
      ? `<span class="badge llm" title="LLM score ${r.scores.llm.toFixed(2)}">LLM</span>`
      : `<span class="badge fast">BM25</span>`;
    li.innerHTML =
      `<span class="rank">${rank + 1}</span>` +
      `<span class="title">${escapeHtml(r.title)}</span>` +
      `<span class="meta">${move}${badge}<span class="score">${r.relevance_score.toFixed(2)}</span></span>` +
      `<span class="text">${highlight(r.text, query)}</span>`;
    frag.appendChild(li);
  });
  list.replaceChildren(frag);
  for (const li of list.children) {
    const old = before.get(li.dataset.id);
    if (old === undefined) continue;
    const dy = old - li.getBoundingClientRect().top;
    if (Math.abs(dy) < 1) continue;
    li.animate([{ transform: `translateY(${dy}px)` }, { transform: "none" }],
      { duration: 450, easing: "cubic-bezier(.2,.7,.2,1)" });
    li.classList.add("flash");
    requestAnimationFrame(() => requestAnimationFrame(() => li.classList.remove("flash")));
  }
  list.dataset.phase = kind;
  window.llmrerankDemo.events.push({
    kind, t: performance.now() - state.started, ids: body.results.map((r) => r.id),
  });

  // Summary, timings, degradation.
  const summary = $("summary");
  summary.replaceChildren(...body.summary.map((s) => {
    const li = document.createElement("li");
    li.innerHTML = highlight(s, query);
    return li;
  }));
  $("summary-box").hidden = body.summary.length === 0;
  const t = prov.timings || {};
  const ret = prov.retrieval || {};
  $("timings").textContent =
    `BM25 over ${ret.corpus_size} paragraphs ${fmt(ret.seconds)} · fast stage ${fmt(t.fast)} · ` +
    (kind === "fast" ? "LLM scoring…"
      : prov.llm_skipped ? "LLM skipped: it cannot score deep enough to be fused in this deadline"
      : `LLM ${fmt(t.llm)} (${prov.llm_scored} of ${prov.k} scored` +
        `${kind === "final" && prov.llm_fused === false && prov.llm_scored > 0 ? ", too few to fuse" : ""})`) +
    ` · total ${fmt(t.total)}`;
  if (kind === "fast") setPhase("working", prov.llm_scorer ? "fast ranking · LLM at work" : "fast ranking");
  else if (kind === "partial") setPhase("working", `LLM scored ${prov.llm_scored} of ${prov.k}`);
  else setPhase("done", "final");
  const deg = $("degraded");
  if (kind === "final" && prov.degraded) {
    deg.hidden = false;
    deg.textContent = `degraded: ${prov.reasons.join(", ")}`;
    deg.title = prov.llm_fused === false
      ? "The LLM could not score deep enough in time to be fused: the fast-stage order stands."
      : "The LLM did not score every candidate in time; the rest keep their fast-stage order.";
  } else {
    deg.hidden = true;
  }
}

async function init() {
  try {
    const info = await (await fetch("/v1/demo/info")).json();
    state.defaultPreset = info.preset;
    $("about").textContent =
      `Search ${info.corpus_size.toLocaleString()} paragraphs of the Python standard library's docstrings. ` +
      `BM25 retrieves the top ${info.retrieve_top_n} at once; ` +
      (info.llm_scorer ? `the LLM (${info.llm_scorer}) re-orders them within ${info.deadline_s} s.` : "no LLM is configured.");
    for (const p of info.presets) {
      const o = document.createElement("option");
      o.value = p;
      o.textContent = p + (p === info.preset ? " (default)" : "");
      o.selected = p === info.preset;
      $("preset").appendChild(o);
    }
  } catch (_) { /* the page still works without the info */ }
}

$("search").addEventListener("submit", (e) => {
  e.preventDefault();
  const q = $("q").value.trim();
  if (q) search(q, $("preset").value);
});
for (const a of document.querySelectorAll(".examples a")) {
  a.addEventListener("click", (e) => {
    e.preventDefault();
    $("q").value = a.dataset.q;
    search(a.dataset.q, $("preset").value);
  });
}
init();
