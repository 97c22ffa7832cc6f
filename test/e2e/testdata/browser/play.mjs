#!/usr/bin/env node
// play.mjs drives a player test page (hls.html, dash.html) in Debian's Chromium, headless, with
// playwright-core: it opens the page, waits for playback to start, plays for --seconds, can force
// a quality switch midway, and prints one JSON object with what it saw on stdout. Progress goes
// to stderr.
//
//   node play.mjs --url 'http://127.0.0.1:PORT/hls.html?src=MANIFEST' [--seconds 10] [--switch]
//
// It fails (exit 1) when currentTime advanced by less than 0.7 x seconds, when the page recorded
// any player error event (hls.js ERROR, fatal or not; dash.js ERROR / PLAYBACK_ERROR; the video
// element's error; an uncaught exception), when a requested switch did not happen, and when the
// browser made a request off this machine. Exit 2 means it could not run at all.
import { chromium } from "playwright-core";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";

// The switches this machine's Chromium needs: no sandbox (root, containers), no GPU, and no
// background networking, which a closed network refuses connection by connection.
const CHROMIUM_FLAGS = [
  "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync",
  // Muted playback needs no gesture anyway; this keeps an unmuted page from stalling a test.
  "--autoplay-policy=no-user-gesture-required",
];

const USAGE = `usage: node play.mjs --url PAGE_URL [options]
  --url URL              page to open, e.g. http://127.0.0.1:PORT/hls.html?src=MANIFEST_URL
  --seconds N            play for N seconds once playback started (default 10)
  --switch               force a switch to another video rendition halfway through
  --switch-replace       dash.js: drop the buffer on the switch (for recordings)
  --startup-timeout S    seconds allowed from page load to playing (default 30)
  --switch-timeout S     seconds allowed for a requested switch to show (default 20)
  --chromium PATH        browser binary (default $CHROMIUM or /usr/bin/chromium)
  --profile-dir DIR      new empty user data dir to use (default: a temporary one)
  --min-advance F        required currentTime advance as a fraction of --seconds (default 0.7)
  --browser-arg ARG      one more Chromium switch (repeatable)
  --watch-stdin          stop (closing the browser) when stdin closes: the caller died`;

let opts;
try {
  opts = parseArgs({
    options: {
      url: { type: "string" },
      seconds: { type: "string", default: "10" },
      switch: { type: "boolean", default: false },
      "switch-replace": { type: "boolean", default: false },
      "startup-timeout": { type: "string", default: "30" },
      "switch-timeout": { type: "string", default: "20" },
      chromium: { type: "string", default: process.env.CHROMIUM || "/usr/bin/chromium" },
      "profile-dir": { type: "string" },
      "min-advance": { type: "string", default: "0.7" },
      "browser-arg": { type: "string", multiple: true, default: [] },
      "watch-stdin": { type: "boolean", default: false },
      help: { type: "boolean", default: false },
    },
  }).values;
} catch (e) {
  console.error(String(e.message) + "\n" + USAGE);
  process.exit(2);
}
if (opts.help) {
  console.log(USAGE);
  process.exit(0);
}
const num = (name) => {
  const v = Number(opts[name]);
  if (!Number.isFinite(v) || v <= 0) {
    console.error(`--${name}: not a positive number: ${opts[name]}\n${USAGE}`);
    process.exit(2);
  }
  return v;
};
if (!opts.url) {
  console.error("--url is required\n" + USAGE);
  process.exit(2);
}
const seconds = num("seconds");
const startupTimeout = num("startup-timeout") * 1000;
const switchTimeout = num("switch-timeout") * 1000;
const minAdvance = num("min-advance");

const progress = (msg) => process.stderr.write(`play.mjs ${new Date().toISOString().slice(11, 23)} ${msg}\n`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// What the browser did, besides the page's own record.
const seen = { pageErrors: [], console: [], offsite: [], failedRequests: [], httpErrors: [] };
const keep = (list, item, max = 100) => { if (list.length < max) list.push(item); };
const localHosts = new Set(["127.0.0.1", "localhost", "[::1]", "::1"]);

const result = {
  ok: false, failures: [], url: opts.url, seconds,
  chromium: opts.chromium, browserVersion: "",
};
let context = null;
let profileDir = opts["profile-dir"];
let ownProfile = false;

async function cleanup() {
  if (context) {
    const c = context;
    context = null;
    await Promise.race([c.close().catch(() => {}), sleep(10000)]);
  }
  if (ownProfile) fs.rmSync(profileDir, { recursive: true, force: true });
}

let finishing = false;
async function finish(code) {
  if (finishing) return;
  finishing = true;
  await cleanup();
  process.stdout.write(JSON.stringify(result, null, 2) + "\n", () => process.exit(code));
}

for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"]) {
  process.on(sig, () => {
    result.failures.push(`killed by ${sig}`);
    progress(`${sig}: closing the browser`);
    finish(2);
  });
}

// A test binary killed on its timeout runs no cleanup: its end closes our stdin, and the browser
// is closed with it rather than left running.
if (opts["watch-stdin"]) {
  process.stdin.on("end", () => {
    result.failures.push("stdin closed: the caller went away");
    finish(2);
  });
  process.stdin.on("error", () => {});
  process.stdin.resume();
}

// A hard deadline of our own, in case the browser or the page hangs.
const hardLimit = startupTimeout + seconds * 1000 + (opts.switch ? switchTimeout + 5000 : 0) + 60000;
setTimeout(() => {
  result.failures.push(`play.mjs gave up after ${hardLimit / 1000} s`);
  finish(1);
}, hardLimit).unref();

async function main() {
  if (!fs.existsSync(opts.chromium)) {
    result.failures.push(`no browser at ${opts.chromium} (run scripts/browser-deps.sh)`);
    return 2;
  }
  if (!profileDir) {
    profileDir = fs.mkdtempSync(path.join(os.tmpdir(), "gopcast-chromium-"));
    ownProfile = true;
  }
  progress(`launching ${opts.chromium} with profile ${profileDir}`);
  context = await chromium.launchPersistentContext(profileDir, {
    executablePath: opts.chromium,
    headless: true,
    args: [...CHROMIUM_FLAGS, ...opts["browser-arg"]],
    handleSIGINT: false, handleSIGTERM: false, handleSIGHUP: false,
    viewport: { width: 800, height: 600 },
    timeout: 60000,
  });
  result.browserVersion = context.browser() ? context.browser().version() : "";
  const page = context.pages()[0] || (await context.newPage());

  page.on("pageerror", (e) => keep(seen.pageErrors, String(e && e.stack || e)));
  page.on("console", (m) => {
    if (m.type() === "error" || m.type() === "warning") keep(seen.console, `${m.type()}: ${m.text()}`, 200);
  });
  page.on("request", (r) => {
    let u;
    try { u = new URL(r.url()); } catch { return; }
    if ((u.protocol === "http:" || u.protocol === "https:" || u.protocol === "ws:" || u.protocol === "wss:") && !localHosts.has(u.hostname)) {
      keep(seen.offsite, r.url());
    }
  });
  page.on("requestfailed", (r) => keep(seen.failedRequests, `${r.failure() ? r.failure().errorText : "failed"} ${r.url()}`));
  page.on("response", (r) => { if (r.status() >= 400) keep(seen.httpErrors, `${r.status()} ${r.url()}`); });

  progress(`opening ${opts.url}`);
  const resp = await page.goto(opts.url, { waitUntil: "load", timeout: startupTimeout });
  if (!resp || !resp.ok()) {
    result.failures.push(`page ${opts.url}: HTTP ${resp ? resp.status() : "no response"}`);
    return 1;
  }
  const snap = async () => page.evaluate(() => window.gp ? window.gp.snapshot() : null);
  let s = await snap();
  if (!s) {
    result.failures.push("the page did not set window.gp");
    return 1;
  }
  result.player = s.player;
  result.playerVersion = s.version;

  // Wait for playback: a "playing" event and the clock moving.
  const loadStart = Date.now();
  for (;;) {
    s = await snap();
    if (s.playing && s.currentTime > 0 && !s.paused) break;
    if (s.errors.some((e) => e.fatal || e.source === "page" || e.source === "video" || e.source === "play")) break;
    if (Date.now() - loadStart > startupTimeout) break;
    await sleep(200);
  }
  result.startupMs = Date.now() - loadStart;
  result.levels = s.levels;
  result.live = s.live;
  result.codecSupport = await page.evaluate((codecs) => {
    const out = {};
    for (const c of codecs) {
      for (const one of c.split(",")) {
        if (one) out[one] = window.MediaSource ? MediaSource.isTypeSupported(`video/mp4; codecs="${one}"`) : false;
      }
    }
    return out;
  }, s.levels.map((l) => l.codecs));
  if (!(s.playing && s.currentTime > 0)) {
    result.failures.push(`playback did not start within ${(Date.now() - loadStart) / 1000} s (readyState ${s.readyState}, currentTime ${s.currentTime})`);
    result.final = s;
    return 1;
  }
  progress(`playing after ${result.startupMs} ms at t=${s.currentTime.toFixed(3)}, ${s.levels.length} renditions, level ${s.currentLevel}`);

  // Play for the given time, forcing a switch halfway through.
  const t0 = s.currentTime;
  const w0 = Date.now();
  const samples = [];
  let target = null;
  while (Date.now() - w0 < seconds * 1000) {
    await sleep(250);
    s = await snap();
    samples.push([Date.now() - w0, +s.currentTime.toFixed(3)]);
    if (opts.switch && !target && Date.now() - w0 >= (seconds * 1000) / 2) {
      target = pickTarget(s);
      if (!target) {
        result.failures.push(`cannot switch: ${s.levels.length} rendition(s) with ${new Set(s.levels.map((l) => l.height)).size} distinct height(s): ${JSON.stringify(s.levels)}`);
      } else {
        progress(`switching ${s.currentLevel} -> ${target.id} (${target.width}x${target.height})`);
        await page.evaluate(([id, replace]) => window.gp.switchTo(id, { replace }), [target.id, opts["switch-replace"]]);
      }
    }
  }
  result.advanced = +(s.currentTime - t0).toFixed(3);
  result.playedWallMs = Date.now() - w0;
  result.samples = samples;
  progress(`currentTime advanced ${result.advanced} s in ${result.playedWallMs} ms`);
  if (result.advanced < minAdvance * seconds) {
    result.failures.push(`currentTime advanced ${result.advanced} s in ${seconds} s of playing, want >= ${(minAdvance * seconds).toFixed(1)} s`);
  }

  if (target) {
    // Wait for the switch to show, then for a frame of the new size, then for the clock to move on.
    const sw = { from: s.switchRequest && s.switchRequest.from, to: target.id, width: target.width, height: target.height };
    result.switch = sw;
    const ws = Date.now();
    while (!(s.switchRequest && s.switchRequest.done) && Date.now() - ws < switchTimeout) {
      await sleep(200);
      s = await snap();
    }
    const done = s.switches.find((x) => x.forced);
    if (!done) {
      result.failures.push(`switch ${sw.from} -> ${sw.to} requested at t=${s.switchRequest ? s.switchRequest.currentTime.toFixed(3) : "?"} did not show within ${switchTimeout / 1000} s more`);
    } else {
      sw.renderedAfterMs = done.ms - s.switchRequest.ms;
      sw.renderedAt = done.currentTime;
      if (target.height) {
        const hs = Date.now();
        while (s.videoHeight !== target.height && Date.now() - hs < 5000) {
          await sleep(200);
          s = await snap();
        }
        sw.videoWidth = s.videoWidth;
        sw.videoHeight = s.videoHeight;
        if (s.videoHeight !== target.height) {
          result.failures.push(`after the switch to ${sw.to} the video is ${s.videoWidth}x${s.videoHeight}, want height ${target.height}`);
        }
      }
      const c0 = s.currentTime;
      await sleep(2000);
      s = await snap();
      sw.advancedAfter = +(s.currentTime - c0).toFixed(3);
      if (sw.advancedAfter < 1.4) {
        result.failures.push(`after the switch currentTime advanced ${sw.advancedAfter} s in 2 s`);
      }
      progress(`switch shown after ${sw.renderedAfterMs} ms at t=${sw.renderedAt.toFixed(3)}, video ${s.videoWidth}x${s.videoHeight}`);
    }
  }

  s = await snap();
  result.final = {
    currentTime: s.currentTime, paused: s.paused, ended: s.ended, readyState: s.readyState, muted: s.muted,
    videoWidth: s.videoWidth, videoHeight: s.videoHeight, buffered: s.buffered, currentLevel: s.currentLevel,
    stalls: s.stalls, totalFrames: s.totalFrames, droppedFrames: s.droppedFrames,
  };
  result.switches = s.switches;
  result.errors = s.errors;
  result.pageLog = s.log.slice(-120);
  if (s.errors.length) {
    result.failures.push(`${s.errors.length} player error event(s); first: ${s.errors[0].source}: ${s.errors[0].message}`);
  }
  return 0;
}

// pickTarget chooses a rendition of another height than the one showing: the lowest when the
// highest is showing, else the highest.
function pickTarget(s) {
  const cur = s.levels.find((l) => String(l.id) === String(s.currentLevel));
  const byHeight = [...s.levels].sort((a, b) => a.height - b.height || a.bandwidth - b.bandwidth);
  const others = byHeight.filter((l) => !cur || l.height !== cur.height);
  if (!cur || others.length === 0) return others.length ? others[others.length - 1] : null;
  const top = byHeight[byHeight.length - 1];
  return cur.height === top.height ? others[0] : others[others.length - 1];
}

let code;
try {
  code = await main();
} catch (e) {
  result.failures.push(`driver: ${e && e.stack || e}`);
  code = 2;
}
Object.assign(result, {
  pageErrors: seen.pageErrors, offsiteRequests: seen.offsite, failedRequests: seen.failedRequests,
  httpErrors: seen.httpErrors, console: seen.console,
});
if (seen.pageErrors.length) result.failures.push(`${seen.pageErrors.length} uncaught page error(s); first: ${seen.pageErrors[0]}`);
if (seen.offsite.length) result.failures.push(`the page made ${seen.offsite.length} request(s) off this machine; first: ${seen.offsite[0]}`);
result.ok = code === 0 && result.failures.length === 0;
if (code === 0 && !result.ok) code = 1;
progress(result.ok ? "ok" : "FAILED: " + result.failures.join("; "));
await finish(code);
