// Rotating shopper tokens in the browser: the Eddystone-EID construction of
// aislecast/kernel/tokens.py, with WebCrypto. WebCrypto has no AES-ECB; the first block
// of AES-CBC with a zero IV is AES of that block, which is all one ECB block is.
"use strict";

const AislecastTokens = (() => {
  function hexToBytes(hex) {
    if (!/^([0-9a-f]{2})+$/i.test(hex)) throw new Error("not hex");
    const out = new Uint8Array(hex.length / 2);
    for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.substr(i * 2, 2), 16);
    return out;
  }

  function bytesToHex(bytes) {
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  async function aesBlock(keyBytes, block) {
    const key = await crypto.subtle.importKey("raw", keyBytes, { name: "AES-CBC" }, false, ["encrypt"]);
    const out = await crypto.subtle.encrypt({ name: "AES-CBC", iv: new Uint8Array(16) }, key, block);
    return new Uint8Array(out).slice(0, 16);
  }

  // The 8-byte EID (hex) for identity key `keyHex` at unix time `unixTs`, exponent `k`.
  async function eidFor(keyHex, unixTs, k) {
    const key = hexToBytes(keyHex);
    if (key.length !== 16) throw new Error("an identity key is 16 bytes");
    if (!(k >= 0 && k <= 15)) throw new Error("rotation exponent k must be within 0..15");
    const ts = Math.floor(unixTs) >>> 0;
    const tempIn = new Uint8Array(16);
    tempIn[11] = 0xff;
    tempIn[14] = (ts >>> 24) & 0xff;
    tempIn[15] = (ts >>> 16) & 0xff;
    const tempKey = await aesBlock(key, tempIn);
    const q = ((ts >>> k) << k) >>> 0;
    const eidIn = new Uint8Array(16);
    eidIn[11] = k;
    eidIn[12] = (q >>> 24) & 0xff;
    eidIn[13] = (q >>> 16) & 0xff;
    eidIn[14] = (q >>> 8) & 0xff;
    eidIn[15] = q & 0xff;
    return bytesToHex((await aesBlock(tempKey, eidIn)).slice(0, 8));
  }

  function randomId() {
    return bytesToHex(crypto.getRandomValues(new Uint8Array(16)));
  }

  return { eidFor, randomId, hexToBytes, bytesToHex };
})();
