// The session player: timeline, seek, play at 0.25x-16x, verify-as-you-play, live follow.
//
// The server decrypts, verifies and decodes; this only draws PNG frames on a canvas.
// A seek asks for one chunk (GET .../playback/{seq}: frame times once the chunk has
// been checked against the signed Merkle root) and one frame image, so its cost does not
// depend on where in the session it lands. Memory stays bounded: a few chunks' frame
// lists and the frame on screen, whatever the session's length.
"use strict";

(function () {
  const CHUNK_CACHE = 8;          // chunk frame lists kept (a few hundred bytes each)
  const LIVE_POLL_MS = 2000;      // timeline refresh while a session records
  const LIVE_DELAY_S = 3;         // how far behind the newest chunk live view plays
  const SPEEDS = [0.25, 0.5, 1, 2, 4, 8, 16];

  function pad(n, w) { return String(n).padStart(w, "0"); }

  function formatSession(seconds, millis) {
    const s = Math.max(0, seconds);
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = Math.floor(s % 60);
    const base = `${h}:${pad(m, 2)}:${pad(sec, 2)}`;
    return millis ? `${base}.${pad(Math.floor((s % 1) * 1000), 3)}` : base;
  }

  function lastAtOrBefore(values, x) {
    // index of the last value <= x in an ascending array (0 when x is before all)
    let lo = 0, hi = values.length - 1, found = 0;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (values[mid] <= x) { found = mid; lo = mid + 1; } else { hi = mid - 1; }
    }
    return found;
  }

  class Player {
    constructor({ api, sessionId, root }) {
      this.api = api;
      this.sessionId = sessionId;
      this.el = (id) => root.querySelector("#" + id);
      this.canvas = this.el("screen");
      this.ctx = this.canvas.getContext("2d");
      this.timeline = null;
      this.starts = [];
      this.t = 0;
      this.playing = false;
      this.speed = 1;
      this.follow = false;
      this.meta = new Map();      // seq -> Promise<frames meta>, most recent last
      this.states = new Map();    // seq -> "verified" | "unsigned" | "failed"
      this.reasons = new Map();   // seq -> reason of a failure
      this.shown = null;          // {seq, index, time}
      this.want = null;
      this.busy = false;
      this.seekStarted = null;
      this.stats = { seeks: [], frames: 0 };
      this.closed = false;
      this.listeners = [];
      this.lastTick = null;
    }

    // lifecycle

    async start() {
      await this.refreshTimeline();
      this.bind();
      if (this.timeline && this.timeline.live) {
        this.follow = true;
        this.t = Math.max(0, this.timeline.duration_s - LIVE_DELAY_S);
      }
      this.updateClock();
      this.show();
      this.poller = setInterval(() => this.poll(), LIVE_POLL_MS);
    }

    close() {
      this.closed = true;
      this.playing = false;
      clearInterval(this.poller);
      for (const [target, type, fn] of this.listeners) target.removeEventListener(type, fn);
      this.listeners = [];
    }

    on(target, type, fn) {
      target.addEventListener(type, fn);
      this.listeners.push([target, type, fn]);
    }

    bind() {
      const bar = this.el("seekbar");
      this.on(bar, "click", (e) => {
        const box = bar.getBoundingClientRect();
        const fraction = Math.min(1, Math.max(0, (e.clientX - box.left) / box.width));
        this.follow = false;
        this.seek(fraction * this.duration());
        bar.focus();
      });
      this.on(this.el("play"), "click", () => this.toggle());
      this.on(this.el("speed"), "change", (e) => this.setSpeed(Number(e.target.value)));
      this.on(this.el("live"), "click", () => this.goLive());
      this.on(document, "keydown", (e) => this.key(e));
    }

    key(e) {
      const tag = (e.target && e.target.tagName) || "";
      if (tag === "INPUT" || tag === "TEXTAREA" || tag === "SELECT") return;
      const step = e.shiftKey ? 60 : 5;
      let handled = true;
      if (e.key === " " || e.key === "k") this.toggle();
      else if (e.key === "ArrowRight") { this.follow = false; this.seek(this.t + step); }
      else if (e.key === "ArrowLeft") { this.follow = false; this.seek(this.t - step); }
      else if (e.key === "Home") { this.follow = false; this.seek(0); }
      else if (e.key === "End") { this.seek(this.duration()); }
      else if (e.key === "]") this.stepSpeed(1);
      else if (e.key === "[") this.stepSpeed(-1);
      else handled = false;
      if (handled) e.preventDefault();
    }

    // timeline

    duration() { return this.timeline ? this.timeline.duration_s : 0; }

    async refreshTimeline() {
      const response = await this.api(`/sessions/${this.sessionId}/timeline`);
      if (!response.ok) throw new Error(`timeline: HTTP ${response.status}`);
      const timeline = await response.json();
      const grew = !this.timeline || timeline.chunks.length !== this.timeline.chunks.length;
      this.timeline = timeline;
      this.starts = timeline.chunks.map((c) => c.start_s);
      this.el("live").hidden = !timeline.live;
      this.el("seekbar").setAttribute("aria-valuemax", String(timeline.duration_s));
      this.el("time-duration").textContent = formatSession(timeline.duration_s, false);
      if (grew) this.renderSpans();
      return timeline;
    }

    async poll() {
      if (this.closed || !this.timeline || !this.timeline.live) return;
      try {
        await this.refreshTimeline();
      } catch (err) {
        return;
      }
      if (this.follow) {
        const target = Math.max(0, this.duration() - LIVE_DELAY_S);
        if (!this.playing || this.t < target - LIVE_DELAY_S) this.t = target;
        this.show();
      }
      this.updateClock();
    }

    goLive() {
      this.follow = true;
      this.seek(Math.max(0, this.duration() - LIVE_DELAY_S));
      if (!this.playing) this.toggle();
    }

    chunkAt(t) {
      const chunks = this.timeline.chunks;
      return chunks[lastAtOrBefore(this.starts, t)];
    }

    // verification state on the seek bar

    setState(seq, state, reason) {
      if (this.states.get(seq) === state) return;
      this.states.set(seq, state);
      if (reason) this.reasons.set(seq, reason); else this.reasons.delete(seq);
      this.renderSpans();
    }

    renderSpans() {
      const holder = this.el("spans");
      const failures = this.el("failures");
      holder.textContent = "";
      failures.textContent = "";
      if (!this.timeline) return;
      const chunks = this.timeline.chunks;
      const total = this.duration() || 1;
      let run = null;
      const flush = () => {
        if (!run || !run.state) return;
        const span = document.createElement("div");
        span.className = `span ${run.state}`;
        span.style.left = `${(100 * run.start) / total}%`;
        span.style.width = `${Math.max(0.2, (100 * (run.end - run.start)) / total)}%`;
        span.dataset.first = String(run.first);
        span.dataset.last = String(run.last);
        span.dataset.start = String(run.start);
        span.dataset.end = String(run.end);
        if (run.state === "failed") {
          span.dataset.seq = String(run.first);
          span.title = `chunk ${run.first}: ${this.reasons.get(run.first) || "failed"}`;
        }
        holder.appendChild(span);
      };
      chunks.forEach((c, i) => {
        const state = this.states.get(c.sequence) || null;
        const end = i + 1 < chunks.length ? chunks[i + 1].start_s : c.end_s;
        // failures are never merged: each red span names its own chunk
        if (run && run.state === state && state !== "failed" && run.last + 1 === c.sequence) {
          run.end = end;
          run.last = c.sequence;
        } else {
          flush();
          run = { state, start: c.start_s, end, first: c.sequence, last: c.sequence };
        }
        if (state === "failed") {
          const item = document.createElement("li");
          item.dataset.seq = String(c.sequence);
          item.textContent = `chunk ${c.sequence} (${formatSession(c.start_s, false)}): ` +
            (this.reasons.get(c.sequence) || "failed");
          failures.appendChild(item);
        }
      });
      flush();
    }

    // chunks and frames

    chunkMeta(seq) {
      let entry = this.meta.get(seq);
      if (entry) {
        this.meta.delete(seq);
        this.meta.set(seq, entry);
        return entry;
      }
      entry = (async () => {
        const response = await this.api(`/sessions/${this.sessionId}/playback/${seq}`);
        if (!response.ok) {
          this.meta.delete(seq);
          throw new Error(`chunk ${seq}: HTTP ${response.status}`);
        }
        const meta = await response.json();
        meta.times = meta.frames.map((f) => f.time_s);
        if (!meta.verified) this.setState(seq, "failed", meta.reason);
        else this.setState(seq, meta.signed ? "verified" : "unsigned");
        return meta;
      })();
      this.meta.set(seq, entry);
      while (this.meta.size > CHUNK_CACHE) this.meta.delete(this.meta.keys().next().value);
      return entry;
    }

    seek(t) {
      if (!this.timeline) return;
      this.t = Math.min(Math.max(0, t), this.duration());
      this.seekStarted = performance.now();
      this.updateClock();
      this.show();
    }

    show() {
      if (!this.timeline || !this.timeline.chunks.length) return;
      const chunk = this.chunkAt(this.t);
      this.want = { seq: chunk.sequence, t: this.t, seekStarted: this.seekStarted };
      this.pump();
    }

    async pump() {
      if (this.busy) return;
      this.busy = true;
      try {
        while (this.want && !this.closed) {
          const wanted = this.want;
          this.want = null;
          try {
            await this.render(wanted);
          } catch (err) {
            this.message(String(err.message || err));
          }
        }
      } finally {
        this.busy = false;
      }
    }

    async render(wanted) {
      const meta = await this.chunkMeta(wanted.seq);
      if (!meta.verified) {
        this.message(`chunk ${wanted.seq} failed verification: ${meta.reason}`);
        this.ctx.fillStyle = "#000";
        this.ctx.fillRect(0, 0, this.canvas.width, this.canvas.height);
        this.shown = { seq: wanted.seq, index: -1, time: wanted.t };
        this.seekDone(wanted);
        return;
      }
      this.message(null);
      const index = lastAtOrBefore(meta.times, wanted.t);
      if (this.shown && this.shown.seq === wanted.seq && this.shown.index === index) {
        this.seekDone(wanted);
        return;
      }
      const path = `/sessions/${this.sessionId}/playback/${wanted.seq}/${index}`;
      const response = await this.api(path);
      if (response.status === 409) {
        const body = await response.json();
        this.meta.delete(wanted.seq);
        this.setState(wanted.seq, "failed", (body.error.details || {}).reason || "failed");
        return;
      }
      if (!response.ok) throw new Error(`frame ${index} of chunk ${wanted.seq}: HTTP ${response.status}`);
      const blob = await response.blob();
      const bitmap = await createImageBitmap(blob, {
        colorSpaceConversion: "none", premultiplyAlpha: "none",
      });
      if (this.canvas.width !== bitmap.width || this.canvas.height !== bitmap.height) {
        this.canvas.width = bitmap.width;
        this.canvas.height = bitmap.height;
      }
      this.ctx.drawImage(bitmap, 0, 0);
      bitmap.close();
      this.stats.frames += 1;
      this.shown = { seq: wanted.seq, index, time: meta.times[index] };
      this.canvas.dataset.sequence = String(wanted.seq);
      this.canvas.dataset.index = String(index);
      this.canvas.dataset.time = String(meta.times[index]);
      this.seekDone(wanted);
    }

    seekDone(wanted) {
      if (wanted.seekStarted != null && wanted.seekStarted === this.seekStarted) {
        this.stats.seeks.push(performance.now() - wanted.seekStarted);
        if (this.stats.seeks.length > 1000) this.stats.seeks.shift();
        this.seekStarted = null;
        this.canvas.dataset.seekedTo = String(wanted.t);
      }
    }

    prefetch() {
      // while playing, check the next chunk before it is needed
      if (!this.playing || !this.timeline) return;
      const chunks = this.timeline.chunks;
      const i = lastAtOrBefore(this.starts, this.t);
      const next = chunks[i + 1];
      if (next && next.start_s - this.t < 2 * this.speed + 1) {
        this.chunkMeta(next.sequence).catch(() => {});
      }
    }

    message(text) {
      const box = this.el("screen-message");
      box.hidden = !text;
      box.textContent = text || "";
    }

    // play

    toggle() {
      this.playing = !this.playing;
      this.el("play").textContent = this.playing ? "Pause" : "Play";
      if (this.playing) {
        if (!this.timeline.live && this.t >= this.duration()) this.t = 0;
        this.lastTick = null;
        requestAnimationFrame((now) => this.tick(now));
      }
    }

    setSpeed(speed) {
      if (!SPEEDS.includes(speed)) return;
      this.speed = speed;
      this.el("speed").value = String(speed);
    }

    stepSpeed(direction) {
      const i = SPEEDS.indexOf(this.speed) + direction;
      if (i >= 0 && i < SPEEDS.length) this.setSpeed(SPEEDS[i]);
    }

    tick(now) {
      if (!this.playing || this.closed) return;
      if (this.lastTick != null) {
        this.t += ((now - this.lastTick) / 1000) * this.speed;
        const chunk = this.chunkAt(this.t);
        if (this.states.get(chunk.sequence) === "failed" && this.t < chunk.end_s) {
          this.t = chunk.end_s;  // play on past a chunk that failed
        }
        if (this.t >= this.duration()) {
          this.t = this.duration();
          if (!this.timeline.live) this.toggle();
        }
        this.show();
        this.prefetch();
        this.updateClock();
      }
      this.lastTick = now;
      requestAnimationFrame((n) => this.tick(n));
    }

    updateClock() {
      this.el("time-session").textContent = formatSession(this.t, true);
      const started = this.timeline && this.timeline.started_at;
      if (started) {
        const wall = new Date(Date.parse(started) + this.t * 1000);
        this.el("time-wall").textContent = isNaN(wall.getTime()) ? "-" :
          wall.toISOString().replace("T", " ").replace("Z", " UTC");
      }
      const total = this.duration() || 1;
      this.el("seek-head").style.left = `calc(${(100 * this.t) / total}% - 1px)`;
      this.el("seekbar").setAttribute("aria-valuenow", String(this.t));
    }
  }

  window.LucidPlayer = Player;
  window.lucidFormatSession = formatSession;
})();
