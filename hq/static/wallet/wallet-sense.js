// What the device senses for the wallet: Web NFC shelf tags (NDEFReader, Android
// Chrome), camera label scans (BarcodeDetector, else the vendored jsQR), and whether
// it has either. Readings go to `report(url, kind, record)` (the wallet's interaction
// report); `say(text)` tells the shopper what happened.
"use strict";

const AislecastSense = (() => {
  function ndefText(record) {
    return new TextDecoder().decode(record.data);
  }

  function readNdef(message) {
    let url = null;
    let info = null;
    for (const rec of message.records) {
      if (rec.recordType === "url" || rec.recordType === "absolute-url") url = url || ndefText(rec);
      else if (rec.recordType === "smart-poster") {
        for (const inner of rec.toRecords() || []) if (inner.recordType === "url") url = url || ndefText(inner);
      } else if (rec.recordType === "aislecast.io:tag") {
        try { info = JSON.parse(ndefText(rec)); } catch (err) { info = null; }
      }
    }
    return { url, info };
  }

  async function startNfc(report, say) {
    try {
      const reader = new NDEFReader();
      await reader.scan();
      say("Hold your phone to a shelf tag.");
      reader.onreading = async (ev) => {
        const { url, info } = readNdef(ev.message);
        if (!url && !info) { say("That tag is not one of ours."); return; }
        const r = await report(url || "", "tap", info);
        say(r.error ? `Tag not reported: ${r.error}` : "Tag read: offers on their way.");
      };
    } catch (err) {
      say(`NFC is not available: ${err.message}`);
    }
  }

  async function startScan(video, report, say) {
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia({ video: { facingMode: "environment" } });
    } catch (err) {
      say(`The camera is not available: ${err.message}`);
      return;
    }
    video.srcObject = stream;
    video.hidden = false;
    await video.play();
    const detector = "BarcodeDetector" in window ? new BarcodeDetector({ formats: ["qr_code"] }) : null;
    const canvas = document.createElement("canvas");
    const until = Date.now() + 60000;
    const finish = (text) => {
      stream.getTracks().forEach((t) => t.stop());
      video.hidden = true;
      return text;
    };
    while (Date.now() < until) {
      let text = null;
      if (detector) {
        const found = await detector.detect(video);
        text = found.length ? found[0].rawValue : null;
      } else if (video.videoWidth) {
        canvas.width = video.videoWidth;
        canvas.height = video.videoHeight;
        const ctx = canvas.getContext("2d");
        ctx.drawImage(video, 0, 0);
        const img = ctx.getImageData(0, 0, canvas.width, canvas.height);
        const hit = jsQR(img.data, img.width, img.height);
        text = hit ? hit.data : null;
      }
      if (text) {
        finish(text);
        const r = await report(text, "scan", null);
        say(r.error ? `Label not reported: ${r.error}` : "Label read: offers on their way.");
        return;
      }
      await new Promise((ok) => setTimeout(ok, 200));
    }
    finish(null);
    say("No label found; try again closer.");
  }

  // What this device can do: Web NFC (Android Chrome), a camera (a video input the
  // browser lists), and whether it decodes QR itself (BarcodeDetector) or needs jsQR.
  async function senses() {
    const nfc = "NDEFReader" in window;
    let camera = false;
    if (navigator.mediaDevices && navigator.mediaDevices.enumerateDevices) {
      try {
        camera = (await navigator.mediaDevices.enumerateDevices()).some((d) => d.kind === "videoinput");
      } catch (err) {
        camera = false;
      }
    }
    const detector = "BarcodeDetector" in window;
    return { nfc, camera, detector };
  }

  return { senses, readNdef, startNfc, startScan };
})();
