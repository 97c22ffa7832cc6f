// Shared part of the player test pages (hls.html, dash.html): the state a test driver reads
// through window.gp.snapshot(), and the <video> element's own events. A page calls
// gpInit(player, version) first, then fills in gp.switchTo(id) and feeds its player's events to
// gp.error / gp.switched / gp.log.
"use strict";

function gpInit(player, version) {
  const video = document.getElementById("video");
  const params = new URLSearchParams(location.search);
  const t0 = performance.now();
  const wall = () => Math.round(performance.now() - t0);
  const maxLog = 300;

  const state = {
    player, version,
    src: params.get("src") || "",
    live: null,
    playing: false,         // a "playing" event was seen
    firstPlayingMs: null,   // page time of the first "playing" event
    stalls: 0,              // "waiting" events after the first "playing"
    levels: [],             // {index, id, width, height, bandwidth, codecs}
    currentLevel: -1,       // id (hls.js: index) of the rendition being shown
    switches: [],           // {from, to, ms, currentTime, forced}
    switchRequest: null,    // {from, to, ms, done}
    errors: [],             // {source, message, ms, currentTime, ...details}
    log: [],
  };

  const status = document.getElementById("status");
  function log(msg) {
    const line = wall() + "ms t=" + video.currentTime.toFixed(3) + " " + msg;
    state.log.push(line);
    if (state.log.length > maxLog) state.log.splice(0, state.log.length - maxLog);
    if (status) status.textContent = state.log.slice(-20).join("\n");
  }

  const gp = {
    video, state, log,
    error(source, message, details) {
      state.errors.push(Object.assign({ source, message: String(message), ms: wall(), currentTime: video.currentTime }, details || {}));
      log("ERROR " + source + ": " + message);
    },
    // play starts playback the way a page without a user gesture must: muted first. It waits
    // until the player has buffered enough to go on ("canplay"), so that the browser's own slow
    // start (software decoding on a busy CI machine) is not reported by the player as a stall.
    play() {
      video.muted = true;
      const go = () => {
        log("play()");
        const p = video.play();
        if (p && p.catch) p.catch((e) => gp.error("play", "play() rejected: " + e.name + ": " + e.message));
      };
      if (video.readyState >= HTMLMediaElement.HAVE_FUTURE_DATA) go();
      else video.addEventListener("canplay", go, { once: true });
    },
    requestSwitch(from, to) {
      state.switchRequest = { from, to, ms: wall(), currentTime: video.currentTime, done: false };
      log("switch requested " + from + " -> " + to);
    },
    switched(from, to) {
      const r = state.switchRequest;
      const forced = !!(r && !r.done && String(to) === String(r.to));
      if (forced) r.done = true;
      state.switches.push({ from, to, ms: wall(), currentTime: video.currentTime, forced });
      log("switched " + from + " -> " + to + (forced ? " (requested)" : ""));
    },
    switchTo() {
      gp.error("page", "this player cannot switch");
    },
    snapshot() {
      const b = [];
      for (let i = 0; i < video.buffered.length; i++) b.push([video.buffered.start(i), video.buffered.end(i)]);
      const q = video.getVideoPlaybackQuality ? video.getVideoPlaybackQuality() : {};
      return Object.assign({}, state, {
        ms: wall(),
        currentTime: video.currentTime,
        paused: video.paused,
        ended: video.ended,
        readyState: video.readyState,
        muted: video.muted,
        videoWidth: video.videoWidth,
        videoHeight: video.videoHeight,
        buffered: b,
        totalFrames: q.totalVideoFrames || 0,
        droppedFrames: q.droppedVideoFrames || 0,
      });
    },
  };

  video.addEventListener("error", () => {
    const e = video.error;
    gp.error("video", e ? "MediaError " + e.code + ": " + (e.message || "") : "error event without MediaError");
  });
  video.addEventListener("playing", () => {
    if (!state.playing) state.firstPlayingMs = wall();
    state.playing = true;
    log("playing");
  });
  video.addEventListener("waiting", () => {
    if (state.playing) state.stalls++;
    log("waiting");
  });
  video.addEventListener("resize", () => log("resize " + video.videoWidth + "x" + video.videoHeight));
  video.addEventListener("ended", () => log("ended"));
  window.addEventListener("error", (e) => gp.error("page", "uncaught: " + e.message));
  window.addEventListener("unhandledrejection", (e) => gp.error("page", "unhandled rejection: " + (e.reason && e.reason.message || e.reason)));

  window.gp = gp;
  return gp;
}
