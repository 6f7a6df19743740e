// Aula's page: the live charts (server-sent events from /events) and the
// playground (a streamed chat completion). Everything else works without it.
"use strict";
(function () {
  const base = document.body.dataset.base || "";
  const csrf = document.body.dataset.csrf || "";

  for (const el of document.querySelectorAll("[data-select]")) {
    el.addEventListener("focus", () => el.select());
  }

  // ---- live view ----
  const charts = document.querySelector("[data-charts]");
  if (charts && window.EventSource) {
    charts.hidden = false;
    let samples = [];
    const fmt = (x) => (x == null ? "—" : Math.round(x).toLocaleString());
    const sum = (o) => Object.values(o || {}).reduce((a, b) => a + b, 0);
    const set = (key, text) => {
      const el = document.querySelector(`[data-live="${key}"]`);
      if (el) el.textContent = text;
    };
    const draw = (name, series, unit) => {
      const svg = document.querySelector(`[data-chart="${name}"]`);
      if (!svg) return;
      const max = Math.max(1, ...series.flat().filter((v) => v != null));
      const n = Math.max(2, samples.length);
      svg.replaceChildren();
      series.forEach((s, i) => {
        const pts = s
          .map((v, j) => (v == null ? null : `${((j / (n - 1)) * 300).toFixed(1)},${(78 - (v / max) * 74).toFixed(1)}`))
          .filter(Boolean)
          .join(" ");
        const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
        line.setAttribute("points", pts);
        line.setAttribute("class", "s" + i);
        svg.appendChild(line);
      });
      const last = series.map((s) => s[s.length - 1]);
      const peak = series.map((s) => Math.max(0, ...s.filter((v) => v != null)));
      const el = document.querySelector(`[data-summary="${name}"]`);
      if (el) el.textContent = `Now ${last.map(fmt).join(" / ")} ${unit}; highest in the window ${peak.map(fmt).join(" / ")} ${unit}.`;
    };
    const render = () => {
      const s = samples[samples.length - 1];
      if (!s) return;
      set("in_flight", fmt(s.in_flight));
      set("queued", fmt(sum(s.queued)));
      set("tokens_in_per_s", fmt(s.tokens_in_per_s));
      set("tokens_out_per_s", fmt(s.tokens_out_per_s));
      set("ttft", s.ttft_p50_ms == null ? "—" : `${fmt(s.ttft_p50_ms)} / ${fmt(s.ttft_p95_ms)} ms`);
      set("refused", fmt(samples.slice(-60).reduce((a, x) => a + sum(x.refused), 0)));
      for (const [m, q] of Object.entries(s.queued || {})) {
        const w = document.querySelector(`[data-waiting="${CSS.escape(m)}"]`);
        if (w) w.textContent = q;
        const b = document.querySelector(`[data-busy="${CSS.escape(m)}"]`);
        if (b) b.textContent = (s.busy || {})[m] ?? 0;
      }
      const kinds = {};
      for (const x of samples) for (const [k, n] of Object.entries(x.refused || {})) kinds[k] = (kinds[k] || 0) + n;
      const tbody = document.querySelector("[data-refusals] tbody");
      if (tbody) {
        const rows = Object.entries(kinds).sort();
        tbody.replaceChildren(...(rows.length ? rows : [["None", ""]]).map(([k, n]) => {
          const tr = document.createElement("tr");
          const th = document.createElement("th");
          th.scope = "row";
          th.textContent = k;
          const td = document.createElement("td");
          td.className = "n";
          td.textContent = n;
          tr.append(th, td);
          return tr;
        }));
      }
      draw("load", [samples.map((x) => x.in_flight), samples.map((x) => sum(x.queued))], "requests (in flight / waiting)");
      draw("tokens", [samples.map((x) => x.tokens_in_per_s), samples.map((x) => x.tokens_out_per_s)], "tokens/s (in / out)");
      draw("ttft", [samples.map((x) => x.ttft_p50_ms), samples.map((x) => x.ttft_p95_ms)], "ms (p50 / p95)");
    };
    const es = new EventSource(base + "/events");
    es.addEventListener("history", (e) => { samples = JSON.parse(e.data); render(); });
    es.addEventListener("sample", (e) => {
      samples.push(JSON.parse(e.data));
      if (samples.length > 900) samples.shift();
      render();
    });
  }

  // ---- playground ----
  const form = document.getElementById("playground");
  if (form) {
    const out = document.getElementById("output");
    const stats = document.getElementById("stats");
    const api = form.dataset.api;
    const request = () => {
      const messages = [];
      const system = form.system.value.trim();
      if (system) messages.push({ role: "system", content: system });
      messages.push({ role: "user", content: form.prompt.value });
      return {
        model: form.model.value,
        messages,
        temperature: Number(form.temperature.value),
        max_tokens: Number(form.max_tokens.value),
      };
    };
    const snippets = () => {
      const r = request();
      const json = JSON.stringify(r);
      document.getElementById("curl").textContent =
        `curl ${api}/chat/completions -H "Authorization: Bearer $AULA_KEY" -H 'Content-Type: application/json' \\\n  -d '${json.replace(/'/g, "'\\''")}'`;
      const py = r.messages.map((m) => `{"role": ${JSON.stringify(m.role)}, "content": ${JSON.stringify(m.content)}}`).join(", ");
      document.getElementById("python").textContent =
        `from openai import OpenAI\nclient = OpenAI(base_url="${api}", api_key="YOUR-KEY")\n` +
        `stream = client.chat.completions.create(model=${JSON.stringify(r.model)}, messages=[${py}],\n` +
        `    temperature=${r.temperature}, max_tokens=${r.max_tokens}, stream=True)\n` +
        `for chunk in stream:\n    if chunk.choices and chunk.choices[0].delta.content:\n        print(chunk.choices[0].delta.content, end="")`;
    };
    form.addEventListener("input", snippets);
    snippets();
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const button = form.querySelector("button[type=submit]");
      button.disabled = true;
      out.textContent = "";
      out.setAttribute("aria-busy", "true");
      stats.textContent = "Waiting for the model…";
      const t0 = performance.now();
      let first = null, usage = null;
      const stores = [...form.querySelectorAll("input[name=store]:checked")].map((e) => e.value);
      const found = new Set();
      try {
        const r = request();
        const body = stores.length
          ? { model: r.model, input: r.messages, temperature: r.temperature, max_output_tokens: r.max_tokens, stream: true,
              tools: [{ type: "file_search", vector_store_ids: stores }], include: ["file_search_call.results"] }
          : Object.assign(r, { stream: true, stream_options: { include_usage: true } });
        const resp = await fetch(base + (stores.length ? "/playground/responses" : "/playground/chat"), {
          method: "POST",
          headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
          body: JSON.stringify(body),
          credentials: "same-origin",
        });
        if (!resp.ok) {
          let msg = resp.status + " " + resp.statusText;
          try { msg = (await resp.json()).error.message; } catch (_) {}
          throw new Error(msg);
        }
        const reader = resp.body.getReader();
        const dec = new TextDecoder();
        let buf = "";
        for (;;) {
          const { done, value } = await reader.read();
          if (done) break;
          buf += dec.decode(value, { stream: true });
          let i;
          while ((i = buf.indexOf("\n\n")) >= 0) {
            const event = buf.slice(0, i);
            buf = buf.slice(i + 2);
            for (const line of event.split("\n")) {
              if (!line.startsWith("data:")) continue;
              const data = line.slice(5).trim();
              if (data === "[DONE]") continue;
              const chunk = JSON.parse(data);
              if (chunk.type === "response.output_text.delta") {
                if (first == null) first = performance.now();
                out.textContent += chunk.delta;
                continue;
              }
              if (chunk.type === "response.completed" || chunk.type === "response.incomplete") {
                const u = chunk.response.usage || {};
                usage = { prompt_tokens: u.input_tokens, completion_tokens: u.output_tokens };
                for (const o of chunk.response.output || []) {
                  for (const f of (o.type === "file_search_call" && o.results) || []) found.add(f.filename);
                }
                continue;
              }
              if (chunk.usage) usage = chunk.usage;
              const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
              const text = delta && (delta.content || delta.reasoning_content);
              if (text) {
                if (first == null) first = performance.now();
                out.textContent += text;
              }
            }
          }
        }
        const secs = (performance.now() - t0) / 1000;
        stats.textContent = `Done in ${secs.toFixed(1)} s` +
          (first != null ? `, first token after ${((first - t0) / 1000).toFixed(2)} s` : "") +
          (usage ? `; ${usage.prompt_tokens} prompt and ${usage.completion_tokens} answer tokens.` : ".") +
          (stores.length ? ` Course material found in: ${found.size ? [...found].join(", ") : "nothing that matched"}.` : "");
      } catch (e) {
        stats.textContent = "";
        out.textContent = "Error: " + e.message;
      } finally {
        out.setAttribute("aria-busy", "false");
        button.disabled = false;
      }
    });
  }
})();
