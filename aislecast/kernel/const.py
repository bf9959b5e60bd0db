"""Every timeout and threshold in one place, each with where its value comes from."""

from __future__ import annotations

from typing import Final

__all__ = [
    "BROKER_MAX_QUEUED_MESSAGES",
    "BROKER_READY_TIMEOUT_S",
    "BUNDLE_REPUBLISH_S",
    "EVENT_BATCH_INTERVAL_S",
    "EVENT_BATCH_MAX",
    "MQTT_BACKOFF_BASE",
    "MQTT_BACKOFF_CAP_S",
    "MQTT_KEEPALIVE_S",
    "MQTT_LINK_CANCEL_RETRY_S",
    "MQTT_SESSION_EXPIRY_S",
    "OUTBOX_INFLIGHT",
    "OUTBOX_MAX_ROWS",
    "PRESENCE_ABSENCE_S",
    "PRESENCE_DWELL_S",
    "TOKEN_EPOCHS_AHEAD",
    "TOKEN_ROTATION_K",
]

# Mosquitto's default of 1,000 queued messages per client silently drops overflow when a
# subscriber lags; HQ's ingest and phones offline for a while need more
# (docs/architecture.md#broker-queue-limit).
BROKER_MAX_QUEUED_MESSAGES: Final = 100_000
# Mosquitto 2.0 is ready in well under 100 ms here; 10 s covers a loaded CI machine.
BROKER_READY_TIMEOUT_S: Final = 10.0

# aiomqtt's reconnect idiom: full jitter, uniform(0, 1.5 ** min(attempt, 10)) -> cap ~58 s.
MQTT_BACKOFF_BASE: Final = 1.5
MQTT_BACKOFF_CAP_S: Final = 60.0
MQTT_KEEPALIVE_S: Final = 15
# Persistent sessions: without a session expiry, aiomqtt's clean start loses messages
# published while a client was away (docs/architecture.md#persistent-mqtt-sessions).
# One day covers a closed store night.
MQTT_SESSION_EXPIRY_S: Final = 86_400
# Closing a link re-cancels its task this often until it ends: a cancel swallowed by
# Python 3.11's asyncio.wait_for (aiomqtt's connect) then costs 1 s, not a hung process.
MQTT_LINK_CANCEL_RETRY_S: Final = 1.0

# Outbox: QoS 1 publishes in flight at once. aiomqtt does ~2.5k msg/s one at a time on
# two cores; a window of 64 keeps the pipe full without starving the loop.
OUTBOX_INFLIGHT: Final = 64
# Bounded outbox: ~1 KiB rows -> ~200 MiB worst case on an SD card; beyond it the oldest
# analytics events are dropped first (offers expire anyway) and counted.
OUTBOX_MAX_ROWS: Final = 200_000
# Events to HQ are batched: at most this many per message, at most this long a wait.
EVENT_BATCH_MAX: Final = 500
EVENT_BATCH_INTERVAL_S: Final = 0.25

# Presence defaults (skeleton): an absence of 6 s ends a visit to a zone (phones in
# foreground advertise at 1-10 Hz; 6 s rides out dropouts measured in the simulator);
# a dwell event every 5 s spent in a zone.
PRESENCE_ABSENCE_S: Final = 6.0
PRESENCE_DWELL_S: Final = 5.0

# Rotating tokens: epoch of 2**K seconds (Eddystone-EID's K). K=9 -> 512 s.
TOKEN_ROTATION_K: Final = 9
# Epochs of resolution tables shipped in a bundle beyond the current one; one epoch
# behind is also shipped to tolerate one epoch of clock skew (docs/architecture.md#rotating-tokens).
TOKEN_EPOCHS_AHEAD: Final = 6
# HQ republishes each store's bundle well before its token tables run out.
BUNDLE_REPUBLISH_S: Final = 300.0
