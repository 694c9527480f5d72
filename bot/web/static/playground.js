// The playground: send messages as a customer, watch the bot answer, and answer pages as on-call.
// Everything from the server is inserted with textContent, never as HTML: messages are untrusted.
"use strict";

(function () {
  const root = document.getElementById("playground");
  if (!root) return;
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const $ = (id) => document.getElementById(id);
  const POLL_MS = 1000;
  let selected = threadFromHash();
  let timer = null;
  let events = null;
  let eventFailures = 0;
  let routeClasses = {};

  function threadFromHash() {
    const match = /thread=([0-9.]+)/.exec(location.hash);
    return match ? match[1] : null;
  }

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else if (key.startsWith("data-")) node.setAttribute(key, value);
      else node[key] = value;
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  async function call(method, url, body) {
    const response = await fetch(url, {
      method,
      credentials: "same-origin",
      headers: body ? { "Content-Type": "application/json", "X-CSRF-Token": csrf } : {},
      body: body ? JSON.stringify(body) : undefined,
    });
    let data = {};
    try { data = await response.json(); } catch (e) { data = {}; }
    if (!response.ok) throw new Error(data.error || `HTTP ${response.status}`);
    return data;
  }

  function notice(text, isError) {
    const box = $("notice");
    box.textContent = text;
    box.className = isError ? "notice error" : "notice";
    box.hidden = !text;
  }

  function select(threadTs) {
    selected = threadTs;
    history.replaceState(null, "", threadTs ? `#thread=${threadTs}` : location.pathname);
    refresh();
  }

  function renderThreads(threads) {
    const list = $("threads");
    list.replaceChildren();
    if (!threads.length) {
      list.append(el("li", { class: "empty" }, "No messages yet."));
      return;
    }
    for (const thread of threads) {
      const button = el("button", { type: "button", class: "thread-link", "data-thread": thread.thread_ts },
        el("span", { class: "text" }, thread.text),
        el("span", { class: `state state-${thread.state}` }, thread.state.replace("_", " ")));
      button.addEventListener("click", () => select(thread.thread_ts));
      list.append(el("li", { class: thread.thread_ts === selected ? "current" : "" }, button));
    }
  }

  function decisionLine(decision) {
    const line = el("div", { class: "decision", "data-route": decision.route },
      el("span", { class: `route ${routeClasses[decision.route] || ""}` }, decision.route),
      ` ${decision.confidence.toFixed(2)} · ${decision.decided_by} · `,
      el("span", { class: "reason" }, decision.reason));
    if (decision.voted && decision.vote_agreement !== null) {
      line.append(` · voted, ${Math.round(decision.vote_agreement * 100)}% agreement`);
    }
    if (decision.escalated) line.append(" · escalated");
    return line;
  }

  const LABELS = { customer: "you", bot: "supportbot", staff: "on-call", notice: "supportbot", ephemeral: "only you" };
  const OUTCOMES = {
    ignored: "no reply needed (a pleasantry)",
    quiet: "the bot stays quiet: a person has this thread",
    failed: "processing failed (see the server log)",
  };

  function renderThread(thread) {
    const pane = $("thread");
    pane.hidden = !thread;
    if (!thread) return;
    $("thread-state").textContent = thread.state.replace("_", " ");
    $("thread-state").className = `state state-${thread.state}`;
    const inspect = $("inspect");
    inspect.hidden = !thread.inspect_url;
    if (thread.inspect_url) inspect.href = thread.inspect_url;
    const items = $("items");
    items.replaceChildren();
    for (const item of thread.items) {
      const li = el("li", { class: `item kind-${item.kind}`, "data-kind": item.kind, "data-ts": item.ts },
        el("header", null, el("strong", null, LABELS[item.kind] || item.kind), item.user ? ` ${item.user}` : ""),
        el("div", { class: item.streaming ? "body streaming" : "body" }, item.text));
      if (item.sources && item.sources.length) {
        const sources = el("div", { class: "sources" }, "Sources: ");
        item.sources.forEach((source, index) => {
          if (index) sources.append(" · ");
          // Only http(s) links become anchors; a file is named, never linked.
          sources.append(source.url && /^https?:\/\//.test(source.url)
            ? el("a", { href: source.url, rel: "noopener noreferrer", target: "_blank" }, source.title)
            : el("span", { title: source.source }, `${source.title} (${source.source})`));
        });
        li.append(sources);
      }
      if (item.feedback) li.append(feedbackButtons(thread.thread_ts, item));
      if (item.offers_human) {
        const ask = el("button", { type: "button", class: "get-human", "data-action": "get-a-human" }, "Get a human");
        ask.addEventListener("click", () => act(ask, () => call("POST", "/api/playground/human-requests",
          { thread_ts: thread.thread_ts, trigger: item.offers_human })));
        li.append(ask);
      }
      if (item.kind === "customer") {
        if (item.decision) li.append(decisionLine(item.decision));
        else if (item.status === "pending" || item.status === "processing") li.append(el("div", { class: "pending" }, "routing…"));
        if (item.outcome && OUTCOMES[item.outcome]) li.append(el("div", { class: "outcome" }, OUTCOMES[item.outcome]));
      }
      items.append(li);
    }
    $("typing").hidden = !thread.working;
  }

  // 👍/👎 under an answer, as in Slack: pressing again changes the rating (the latest press counts).
  function feedbackButtons(threadTs, item) {
    const box = el("div", { class: "feedback", role: "group", "aria-label": "Rate this answer" });
    for (const [value, thumb, label] of [["good", "👍", "This answer helped"], ["bad", "👎", "This answer did not help"]]) {
      const button = el("button", { type: "button", title: label, "aria-label": label, "data-feedback": value }, thumb);
      button.setAttribute("aria-pressed", String(item.feedback.value === value));
      button.addEventListener("click", () => act(button, () => call("POST", "/api/playground/feedback",
        { thread_ts: threadTs, ts: item.ts, value })));
      box.append(button);
    }
    return box;
  }

  async function act(button, send) {
    button.disabled = true;
    try {
      await send();
      refresh();
    } catch (error) {
      notice(String(error.message || error), true);
    } finally {
      button.disabled = false;
    }
  }

  function renderPages(pages) {
    const list = $("pages");
    list.replaceChildren();
    if (!pages.length) {
      list.append(el("li", { class: "empty" }, "No pages yet. Ask for a human to see one."));
      return;
    }
    for (const page of pages) {
      const lines = el("div", { class: "blocks" });
      for (const line of page.page) lines.append(el("div", { class: `block-${line.style}` }, line.text));
      const buttons = el("div", { class: "buttons" });
      const act = (action) => async () => {
        try {
          const result = await call("POST", `/api/playground/escalations/${page.id}/${action}`, {});
          notice(`Escalation #${page.id}: ${result.message}`, false);
        } catch (error) {
          notice(String(error.message || error), true);
        }
        refresh();
      };
      if (page.can_acknowledge) {
        const ack = el("button", { type: "button", class: "primary", "data-action": "acknowledge" }, "Acknowledge");
        ack.addEventListener("click", act("acknowledge"));
        buttons.append(ack);
      }
      if (page.can_resolve) {
        const resolve = el("button", { type: "button", "data-action": "resolve" }, "Resolve");
        resolve.addEventListener("click", act("resolve"));
        buttons.append(resolve);
      }
      const meta = el("div", { class: "page-meta" }, `${page.state} · ${page.trigger} · `,
        el("a", { href: page.inspect_url }, "inspect"));
      if (page.thread_ts) {
        const open = el("button", { type: "button", class: "link" }, "open the thread");
        open.addEventListener("click", () => select(page.thread_ts));
        meta.append(" · ", open);
      }
      const li = el("li", { class: `page page-${page.state}`, "data-escalation": page.id, "data-state": page.state },
        lines, buttons, meta);
      list.append(li);
    }
  }

  function renderWarnings(warnings) {
    const list = $("sla-warnings");
    list.replaceChildren();
    for (const warning of warnings || []) {
      const li = el("li", { class: "page sla-warning", "data-ts": warning.ts }, el("div", { class: "blocks" }, warning.text));
      const open = el("button", { type: "button", class: "link" }, "open the thread");
      open.addEventListener("click", () => select(warning.thread_ts));
      li.append(el("div", { class: "page-meta" }, open));
      list.append(li);
    }
  }

  function render(state) {
    routeClasses = state.route_classes || {};
    renderThreads(state.threads);
    renderThread(state.thread);
    renderWarnings(state.sla_warnings);
    renderPages(state.escalations);
  }

  // Changes arrive as server-sent events (answers appear while they are written); where the event stream
  // cannot be kept open, the page polls instead.
  function refresh() {
    clearTimeout(timer);
    if (events) events.close();
    events = null;
    const query = selected ? `?thread=${encodeURIComponent(selected)}` : "";
    if (window.EventSource && eventFailures < 3) {
      events = new EventSource(`/api/playground/events${query}`);
      events.addEventListener("state", (event) => {
        eventFailures = 0;
        notice("", false);
        render(JSON.parse(event.data));
      });
      events.onerror = () => {
        eventFailures += 1;
        if (eventFailures >= 3) refresh();
      };
      return;
    }
    poll(query);
  }

  async function poll(query) {
    try {
      render(await call("GET", `/api/playground/state${query}`));
    } catch (error) {
      notice(`Cannot reach the server: ${error.message || error}`, true);
    }
    timer = setTimeout(() => poll(query), document.hidden ? POLL_MS * 5 : POLL_MS);
  }

  function onSubmit(formId, send) {
    const form = $(formId);
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const box = form.querySelector("textarea");
      const text = box.value.trim();
      if (!text) return;
      const button = form.querySelector("button[type=submit]");
      button.disabled = true;
      try {
        await send(text);
        box.value = "";
      } catch (error) {
        notice(String(error.message || error), true);
      } finally {
        button.disabled = false;
      }
    });
    form.querySelector("textarea").addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey) {
        event.preventDefault();
        form.requestSubmit();
      }
    });
  }

  onSubmit("new-message", async (text) => {
    const sent = await call("POST", "/api/playground/messages", { text });
    select(sent.thread_ts);
  });
  onSubmit("reply-customer", async (text) => {
    await call("POST", "/api/playground/messages", { text, thread_ts: selected });
    refresh();
  });
  onSubmit("reply-staff", async (text) => {
    await call("POST", "/api/playground/staff-replies", { text, thread_ts: selected });
    refresh();
  });
  for (const example of document.querySelectorAll("[data-example]")) {
    example.addEventListener("click", () => {
      $("new-text").value = example.getAttribute("data-example");
      $("new-text").focus();
    });
  }
  window.addEventListener("hashchange", () => { selected = threadFromHash(); refresh(); });
  document.addEventListener("visibilitychange", () => { if (!document.hidden && !events) refresh(); });
  refresh();
})();
