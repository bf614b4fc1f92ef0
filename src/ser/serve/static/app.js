// ser browser demo: microphone → WebSocket /v1/stream (PCM16 at the audio context's rate) → live bars and a
// scrolling timeline; a file upload → POST /v1/timeline → the recording's timeline. No build step, no CDN.
// The API key typed in goes in headers only: X-API-Key on fetch, and on the WebSocket (where a browser cannot set
// headers) the subprotocol "key.<base64url(key)>" offered beside "ser.v1". Never in a URL, never stored.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  // tab10, as the server's PNG plots
  const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf"];
  const HOP_S = 0.5;
  const WINDOW_S = 2.0;
  const LIVE_SPAN_S = 30;
  const SEND_EVERY_S = 0.02; // 20 ms frames
  const MAX_BUFFERED = 1 << 20; // bytes queued in the socket before frames are dropped

  const WORKLET_URL = "static/worklet.js"; // the capture worklet (a file: the page's CSP allows scripts from here only)

  const state = {
    labels: [],
    ws: null,
    ready: false,
    capturing: false,
    ctx: null,
    media: null,
    nodes: [],
    pending: [],
    pendingLen: 0,
    partials: 0,
    voicedPartials: 0,
    points: [],
    lastT: 0,
    dropped: 0,
  };

  // ------------------------------------------------------------------------------------------------ helpers

  function colorOf(label) {
    const i = state.labels.indexOf(label);
    return i < 0 ? "#999999" : PALETTE[i % PALETTE.length];
  }

  function setStatus(text, st) {
    const s = $("status");
    s.textContent = text;
    s.dataset.state = st;
  }

  function log(text) {
    $("log").textContent = text;
  }

  function apiKey() {
    return $("api-key").value.trim();
  }

  function authHeaders() {
    const k = apiKey();
    return k ? { "X-API-Key": k } : {};
  }

  function base64url(text) {
    let bin = "";
    for (const b of new TextEncoder().encode(text)) bin += String.fromCharCode(b);
    return btoa(bin).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function streamProtocols() {
    const k = apiKey();
    return k ? ["ser.v1", "key." + base64url(k)] : ["ser.v1"];
  }

  function swatch(label) {
    const s = document.createElement("span");
    s.className = "swatch";
    s.style.background = colorOf(label);
    return s;
  }

  // ------------------------------------------------------------------------------------------------ bars

  function buildBars(labels) {
    if (labels.join("|") === state.labels.join("|") && $("bars").children.length) return;
    state.labels = labels.slice();
    const bars = $("bars");
    bars.replaceChildren();
    bars.dataset.voiced = "false";
    for (const label of labels) {
      const row = document.createElement("div");
      row.className = "bar";
      row.id = "bar-" + label;
      row.dataset.label = label;
      row.dataset.value = "0";
      const name = document.createElement("span");
      name.className = "name";
      name.textContent = label;
      const track = document.createElement("div");
      track.className = "track";
      const fill = document.createElement("div");
      fill.className = "fill";
      fill.style.background = colorOf(label);
      track.appendChild(fill);
      const value = document.createElement("span");
      value.className = "value";
      value.textContent = "0.00";
      row.append(name, track, value);
      bars.appendChild(row);
    }
    const legend = $("legend");
    legend.replaceChildren();
    for (const label of labels) {
      const item = document.createElement("span");
      item.append(swatch(label), document.createTextNode(label));
      legend.appendChild(item);
    }
  }

  function setBars(probabilities, top) {
    for (const label of state.labels) {
      const row = document.getElementById("bar-" + label);
      if (!row) continue;
      const p = Number(probabilities[label] || 0);
      row.dataset.value = p.toFixed(4);
      row.querySelector(".fill").style.width = (100 * p).toFixed(1) + "%";
      row.querySelector(".value").textContent = p.toFixed(2);
      row.classList.toggle("top", label === top);
    }
  }

  // ------------------------------------------------------------------------------------------------ live timeline

  function drawLive() {
    const c = $("live-timeline");
    const g = c.getContext("2d");
    const w = c.width;
    const h = c.height;
    g.clearRect(0, 0, w, h);
    const now = Math.max(state.lastT, LIVE_SPAN_S);
    const x = (t) => w - ((now - t) / LIVE_SPAN_S) * w;
    g.strokeStyle = "#e5e5e0";
    g.fillStyle = "#8a8a8f";
    g.font = "10px sans-serif";
    for (let t = Math.ceil(now - LIVE_SPAN_S); t <= now; t += 5) {
      if (t % 5 !== 0) continue;
      g.beginPath();
      g.moveTo(x(t), 0);
      g.lineTo(x(t), h - 12);
      g.stroke();
      g.fillText(t + " s", x(t) + 2, h - 2);
    }
    const hop = HOP_S;
    for (const pt of state.points) {
      if (pt.t < now - LIVE_SPAN_S - hop) continue;
      const x0 = x(pt.t - hop);
      const x1 = x(pt.t);
      if (!pt.voiced) {
        g.fillStyle = "#d9d9d6";
        g.fillRect(x0, h - 16, x1 - x0 - 1, 3);
        continue;
      }
      const bh = Math.max(4, pt.p * (h - 20));
      g.fillStyle = colorOf(pt.label);
      g.fillRect(x0, h - 14 - bh, x1 - x0 - 1, bh);
    }
  }

  // ------------------------------------------------------------------------------------------------ stream messages

  function onMessage(m) {
    switch (m.type) {
      case "ready":
        state.ready = true;
        buildBars(m.labels);
        setStatus("listening (model " + m.model_version + ", " + m.sample_rate + " Hz)", "listening");
        break;
      case "partial": {
        state.partials += 1;
        state.lastT = m.t;
        const count = $("partial-count");
        count.dataset.count = String(state.partials);
        $("stream-time").textContent = m.t.toFixed(1) + " s";
        $("latency").textContent = m.latency_ms.toFixed(0) + " ms";
        $("bars").dataset.voiced = String(m.voiced);
        if (m.voiced && m.probabilities) {
          state.voicedPartials += 1;
          count.dataset.voiced = String(state.voicedPartials);
          setBars(m.probabilities, m.label);
          state.points.push({ t: m.t, voiced: true, label: m.label, p: m.probabilities[m.label] });
        } else {
          state.points.push({ t: m.t, voiced: false });
        }
        count.textContent = state.partials + " updates (" + state.voicedPartials + " with voice)";
        if (state.points.length > 4 * LIVE_SPAN_S / HOP_S) state.points.shift();
        drawLive();
        break;
      }
      case "final": {
        const li = document.createElement("li");
        li.dataset.label = m.label;
        const p = m.probabilities[m.label];
        li.append(swatch(m.label), document.createTextNode(
          m.start.toFixed(1) + "–" + m.end.toFixed(1) + " s: " + m.label + " (" + p.toFixed(2) + ")"));
        const list = $("finals");
        list.appendChild(li);
        list.dataset.count = String(list.children.length);
        li.scrollIntoView({ block: "nearest" });
        break;
      }
      case "error":
        log("server: " + m.code + ": " + m.message);
        if (!state.ready) setStatus("error: " + m.code, "error");
        break;
      case "done":
        setStatus("done: " + m.utterances + " utterance(s)", "done");
        break;
      default:
        break;
    }
  }

  // ------------------------------------------------------------------------------------------------ capture

  function pushSamples(f32) {
    if (!state.capturing || !state.ctx || !state.ready || !state.ws || state.ws.readyState !== WebSocket.OPEN) return;
    state.pending.push(f32);
    state.pendingLen += f32.length;
    const need = Math.round(state.ctx.sampleRate * SEND_EVERY_S);
    if (state.pendingLen < need) return;
    const pcm = new Int16Array(state.pendingLen);
    let o = 0;
    for (const block of state.pending) {
      for (let i = 0; i < block.length; i++) {
        const v = Math.max(-1, Math.min(1, block[i]));
        pcm[o++] = v < 0 ? v * 32768 : v * 32767;
      }
    }
    state.pending = [];
    state.pendingLen = 0;
    if (state.ws.bufferedAmount > MAX_BUFFERED) {
      state.dropped += 1;
      log("network too slow: audio dropped (" + state.dropped + " frames)");
      return;
    }
    state.ws.send(pcm.buffer);
  }

  async function openCapture() {
    const media = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false },
    });
    let ctx = new AudioContext();
    if (ctx.sampleRate < 8000 || ctx.sampleRate > 48000) {
      await ctx.close();
      ctx = new AudioContext({ sampleRate: 48000 });
    }
    const source = ctx.createMediaStreamSource(media);
    let node;
    if (ctx.audioWorklet && typeof AudioWorkletNode !== "undefined") {
      await ctx.audioWorklet.addModule(WORKLET_URL);
      node = new AudioWorkletNode(ctx, "ser-tap", { numberOfInputs: 1, numberOfOutputs: 1, channelCount: 1 });
      node.port.onmessage = (e) => pushSamples(e.data);
    } else {
      node = ctx.createScriptProcessor(4096, 1, 1);
      node.onaudioprocess = (e) => pushSamples(e.inputBuffer.getChannelData(0).slice(0));
    }
    const mute = ctx.createGain(); // keeps the graph running without playing the microphone back
    mute.gain.value = 0;
    source.connect(node);
    node.connect(mute);
    mute.connect(ctx.destination);
    await ctx.resume();
    state.ctx = ctx;
    state.media = media;
    state.nodes = [source, node, mute];
    state.capturing = true;
  }

  function closeCapture() {
    state.capturing = false; // worklet messages already queued are dropped, and nothing follows "end"
    for (const n of state.nodes) {
      try {
        n.disconnect();
      } catch (e) {
        /* already disconnected */
      }
    }
    state.nodes = [];
    if (state.media) state.media.getTracks().forEach((t) => t.stop());
    state.media = null;
    if (state.ctx) state.ctx.close();
    state.ctx = null;
    state.pending = [];
    state.pendingLen = 0;
  }

  function streamUrl() {
    const url = new URL("v1/stream", window.location.href);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    return url.toString();
  }

  async function start() {
    if (state.ws) return;
    $("start").disabled = true;
    log("");
    setStatus("opening the microphone…", "starting");
    try {
      await openCapture();
    } catch (e) {
      closeCapture();
      setStatus("microphone unavailable: " + (e && e.message ? e.message : e), "error");
      $("start").disabled = false;
      return;
    }
    state.ready = false;
    state.partials = 0;
    state.voicedPartials = 0;
    state.points = [];
    state.lastT = 0;
    $("finals").replaceChildren();
    $("finals").dataset.count = "0";
    setStatus("connecting…", "connecting");
    const ws = new WebSocket(streamUrl(), streamProtocols());
    ws.binaryType = "arraybuffer";
    state.ws = ws;
    ws.onopen = () => {
      ws.send(JSON.stringify({
        type: "start", sample_rate: Math.round(state.ctx.sampleRate), encoding: "pcm16", hop_s: HOP_S,
        window_s: WINDOW_S,
      }));
    };
    ws.onmessage = (e) => {
      if (typeof e.data === "string") onMessage(JSON.parse(e.data));
    };
    ws.onerror = () => log("connection error");
    ws.onclose = (e) => {
      closeCapture();
      state.ws = null;
      state.ready = false;
      $("start").disabled = false;
      $("stop").disabled = true;
      const st = $("status").dataset.state;
      if (st !== "done" && st !== "error") {
        setStatus("disconnected (" + e.code + (e.reason ? ": " + e.reason : "") + ")", e.code === 1000 ? "done" : "error");
      }
    };
    $("stop").disabled = false;
  }

  function stop() {
    $("stop").disabled = true;
    const ws = state.ws;
    closeCapture();
    if (ws && ws.readyState === WebSocket.OPEN) {
      setStatus("finishing…", "finishing");
      ws.send(JSON.stringify({ type: "end" }));
    } else if (ws) {
      ws.close();
    }
  }

  // ------------------------------------------------------------------------------------------------ file timeline

  function drawFileTimeline(tl) {
    const c = $("file-timeline");
    const g = c.getContext("2d");
    const w = c.width;
    const h = c.height;
    const plotH = h - 28;
    g.clearRect(0, 0, w, h);
    const dur = Math.max(tl.duration_s, 1e-3);
    const x = (t) => (t / dur) * w;
    const grid = tl.timeline;
    const step = grid.step_s;
    grid.times_s.forEach((t, k) => {
      if (!grid.voiced[k]) return;
      let y = plotH;
      for (const label of tl.labels) {
        const p = grid.probabilities[label][k];
        if (p === null || p === undefined) continue;
        const bh = p * plotH;
        g.fillStyle = colorOf(label);
        g.fillRect(x(t - step / 2), y - bh, Math.max(1, x(step) + 0.5), bh);
        y -= bh;
      }
    });
    g.fillStyle = "#333333";
    for (const s of tl.segments) g.fillRect(x(s.start_s), plotH + 2, Math.max(1, x(s.end_s) - x(s.start_s)), 5);
    g.fillStyle = "#8a8a8f";
    g.font = "10px sans-serif";
    const tick = dur > 120 ? 30 : dur > 30 ? 10 : dur > 8 ? 2 : 1;
    for (let t = 0; t <= dur; t += tick) g.fillText(t + " s", x(t) + 2, h - 4);
  }

  function showSummary(tl) {
    const s = tl.summary;
    const box = $("summary");
    box.classList.remove("error");
    box.replaceChildren();
    const head = document.createElement("div");
    head.textContent = "dominant: " + (s.dominant || "none") + " · voiced " + s.voiced_s.toFixed(1) + " of " +
      s.duration_s.toFixed(1) + " s · " + tl.segments.length + " segment(s) · " + tl.processing_ms.toFixed(0) + " ms";
    box.appendChild(head);
    const shares = document.createElement("div");
    shares.className = "shares";
    for (const label of tl.labels) {
      const item = document.createElement("span");
      item.dataset.label = label;
      item.dataset.share = String(s.shares[label]);
      item.append(swatch(label), document.createTextNode(label + " " + (100 * s.shares[label]).toFixed(0) + " %"));
      shares.appendChild(item);
    }
    box.appendChild(shares);
    box.dataset.dominant = s.dominant || "";
    box.dataset.segments = String(tl.segments.length);
    box.dataset.ready = "true";
  }

  async function upload(ev) {
    ev.preventDefault();
    const box = $("summary");
    const file = $("file-input").files[0];
    if (!file) {
      box.textContent = "choose an audio file first";
      return;
    }
    box.dataset.ready = "false";
    box.classList.remove("error");
    box.textContent = "analysing " + file.name + "…";
    const form = new FormData();
    form.append("file", file, file.name);
    try {
      const r = await fetch("v1/timeline", { method: "POST", body: form, headers: authHeaders() });
      const body = await r.json();
      if (!r.ok) {
        const err = body.error || {};
        box.classList.add("error");
        box.dataset.ready = "error";
        box.textContent = (err.code || r.status) + ": " + (err.message || r.statusText);
        return;
      }
      buildBars(body.labels);
      drawFileTimeline(body);
      showSummary(body);
    } catch (e) {
      box.classList.add("error");
      box.dataset.ready = "error";
      box.textContent = "request failed: " + (e && e.message ? e.message : e);
    }
  }

  // ------------------------------------------------------------------------------------------------ start-up

  async function loadModel() {
    try {
      const r = await fetch("v1/model", { headers: authHeaders() });
      if (r.status === 401) {
        $("model-info").textContent = "enter the API key";
        return;
      }
      if (!r.ok) {
        $("model-info").textContent = "no model loaded yet";
        return;
      }
      const m = await r.json();
      const info = $("model-info");
      info.textContent = m.name + " v" + m.version + " · " + m.labels.length + " emotions";
      info.dataset.version = m.version;
      buildBars(m.labels);
    } catch (e) {
      $("model-info").textContent = "server unreachable";
    }
  }

  $("start").addEventListener("click", start);
  $("stop").addEventListener("click", stop);
  $("upload-form").addEventListener("submit", upload);
  $("api-key").addEventListener("change", loadModel);
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    $("start").disabled = true;
    setStatus("no microphone access here (the page needs https or localhost)", "error");
  }
  loadModel();
  drawLive();
})();
