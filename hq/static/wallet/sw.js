// The wallet's service worker: caches the shell (pages, styles, scripts) so the wallet
// opens without a network; never the JSON routes, whose answers are the shopper's own.
"use strict";

const SHELL_CACHE = "aislecast-wallet-shell-v1";
const SHELL = [
  "/wallet/", "/wallet/wallet.js", "/wallet/wallet-crypto.js", "/wallet/wallet-sense.js", "/wallet/lead.js", "/wallet/wallet.css",
  "/wallet/manifest.webmanifest", "/wallet/icon.svg", "/wallet/vendor/mqtt.min.js",
  "/wallet/vendor/qrcode.js", "/wallet/vendor/jsQR.js",
];

self.addEventListener("install", (event) => {
  event.waitUntil(caches.open(SHELL_CACHE).then((c) => c.addAll(SHELL)).then(() => self.skipWaiting()));
});

self.addEventListener("activate", (event) => {
  event.waitUntil(caches.keys().then((keys) => Promise.all(
    keys.filter((k) => k !== SHELL_CACHE).map((k) => caches.delete(k)))).then(() => self.clients.claim()));
});

self.addEventListener("fetch", (event) => {
  const url = new URL(event.request.url);
  if (event.request.method !== "GET" || url.origin !== self.location.origin
      || !SHELL.includes(url.pathname)) {
    return; // the network as usual: config, stores, enrolment, HQ's API
  }
  // network first (a new release shows at once), the cached shell when offline
  event.respondWith(fetch(event.request).then((resp) => {
    const copy = resp.clone();
    if (resp.ok) caches.open(SHELL_CACHE).then((c) => c.put(event.request, copy));
    return resp;
  }).catch(() => caches.match(event.request)));
});
