"""One supervised MQTT v5 connection per component, on aiomqtt.

:class:`MqttLink` keeps a connection alive (full-jitter exponential backoff, capped
near a minute), re-subscribes after every reconnect (aiomqtt does not expose
session-present), hands each message to a handler that may not raise into the loop, and
offers :meth:`MqttLink.publish`, which waits for a connection and raises
:class:`~aislecast.kernel.errors.PublishDenied` when the broker refuses a QoS 1 publish (PUBACK
reason >= 0x80), something aiomqtt's own ``publish`` silently accepts (docs/architecture.md#denied-publishes).
The link also remembers what the broker refused on its way in: the login of the last
attempt (:attr:`MqttLink.login_refused`) and any subscription of the current connection
(:attr:`MqttLink.refused_subscriptions`, from the SUBACK reason codes).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from aislecast.kernel.const import (
    MQTT_BACKOFF_BASE,
    MQTT_BACKOFF_CAP_S,
    MQTT_KEEPALIVE_S,
    MQTT_LINK_CANCEL_RETRY_S,
    MQTT_SESSION_EXPIRY_S,
)
from aislecast.kernel.errors import ConfigError, PublishDenied

__all__ = ["CheckedClient", "MessageHandler", "MqttLink", "MqttSettings", "backoff_delay",
           "cancel_until_done", "is_login_refusal", "tls_hint"]

log = logging.getLogger("aislecast.kernel.mqtt")

MessageHandler = Callable[[aiomqtt.Message], Awaitable[None]]
# CONNACK codes of a refused login: MQTT 3.1.1 (4, 5) and MQTT 5 (bad user name or
# password, not authorized, bad authentication method)
_LOGIN_REFUSED = frozenset({0x04, 0x05, 0x86, 0x87, 0x8C})


def is_login_refusal(exc: BaseException) -> bool:
    """Whether ``exc`` (from a connect) is the broker refusing the login, not a network error."""
    if not isinstance(exc, aiomqtt.MqttCodeError):
        return False
    code = exc.rc if isinstance(exc.rc, int) else getattr(exc.rc, "value", None)
    return code in _LOGIN_REFUSED


@dataclass(frozen=True, slots=True)
class MqttSettings:
    host: str = "127.0.0.1"
    port: int = 1883
    username: str | None = None
    password: str | None = None
    # TLS: on when any of these is set. tls_ca: CA file (PEM) that verifies the broker's
    # certificate (None with a client certificate: the system's CAs); tls_cert/tls_key:
    # this client's certificate and key for a mutual-TLS listener (both or neither)
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    keepalive: int = MQTT_KEEPALIVE_S
    session_expiry_s: int = MQTT_SESSION_EXPIRY_S
    max_inflight: int = 256

    def __post_init__(self) -> None:
        if (self.tls_cert is None) != (self.tls_key is None):
            missing = "tls_key" if self.tls_key is None else "tls_cert"
            raise ConfigError(f"broker.{missing}", "a client certificate needs both tls_cert and tls_key",
                              hint="set both (`aislecast hq gateways add --tls` writes the pair)")

    @property
    def tls(self) -> bool:
        return self.tls_ca is not None or self.tls_cert is not None

    def tls_params(self) -> aiomqtt.TLSParameters | None:
        """aiomqtt's TLS settings (paho loads the files at each connect, so a renewed
        certificate is picked up on the next reconnect); None for plain TCP."""
        if not self.tls:
            return None
        return aiomqtt.TLSParameters(ca_certs=self.tls_ca, certfile=self.tls_cert,
                                     keyfile=self.tls_key)


class _PackedProperties(Properties):
    """Immutable PUBLISH properties that pack once: paho's pure-Python ``pack`` cost
    ~27 µs per publish at 2,000 offers/s, building the object another ~20 µs."""

    def __init__(self, seconds: int) -> None:
        super().__init__(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        self.MessageExpiryInterval = seconds
        object.__setattr__(self, "_packed", super().pack())  # type: ignore[no-untyped-call]

    def pack(self) -> bytes:
        packed: bytes = object.__getattribute__(self, "_packed")
        return packed


@functools.lru_cache(maxsize=4096)
def _expiry_props(seconds: int) -> Properties:
    """PUBLISH properties with a message expiry, shared between publishes."""
    return _PackedProperties(seconds)


def _sub_options(topic: str, qos: int) -> SubscribeOptions:
    """No Local: never receive our own publishes back (a gateway reading its store's
    peers' events would otherwise parse its own batches: measured stalls of up to 114 ms
    in paho's read callback). MQTT 5 forbids No Local on shared subscriptions."""
    return SubscribeOptions(qos=qos, noLocal=not topic.startswith("$share/"))


async def cancel_until_done(task: asyncio.Task[object], retry_s: float = MQTT_LINK_CANCEL_RETRY_S
                            ) -> None:
    """Cancel ``task`` and wait for it, cancelling again every ``retry_s`` until it ends.

    On Python 3.11, asyncio.wait_for (inside aiomqtt's connect and publish) returns
    normally when a cancel lands in the loop turn its answer arrives, so one cancel can
    be lost and an MQTT task run on with nobody left to stop it (seen as a hung
    `aislecast demo` after Ctrl-C, and a kill benchmark that never ended)."""
    while not task.done():
        task.cancel()
        try:
            await asyncio.wait({task}, timeout=retry_s)
        except asyncio.CancelledError:
            task.cancel()  # we are cancelled ourselves: leave it cancelled, not waited
            raise
    with contextlib.suppress(asyncio.CancelledError):
        await task


def backoff_delay(attempt: int) -> float:
    """aiomqtt's reconnect idiom: full jitter over ``1.5 ** min(attempt, 10)`` seconds."""
    return random.uniform(0, min(MQTT_BACKOFF_CAP_S, MQTT_BACKOFF_BASE ** min(attempt, 10)))


def tls_hint(settings: MqttSettings, error: str) -> str:
    """aiomqtt reports a TLS refusal (client certificate missing, revoked or from another
    CA; plain MQTT sent to a TLS port) only as a timeout: what to check, after ``error``."""
    if settings.tls and "timed out" in error:
        return (" (over TLS this is often a refused handshake: check tls_ca, tls_cert and"
                " tls_key against the broker's CA and CRL, and that the port is TLS)")
    return ""


class CheckedClient(aiomqtt.Client):
    """aiomqtt client whose :meth:`publish_checked` surfaces the PUBACK reason code.

    Relies on aiomqtt's private ``_client``, ``_on_publish``, ``_on_disconnect``,
    ``_connected`` and ``_disconnected``;
    ``tests/test_mqtt_conformance.py`` fails when a new aiomqtt drops them.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._reason_futs: dict[int, asyncio.Future[ReasonCode]] = {}

    def _on_disconnect(self, *args: Any, **kwargs: Any) -> None:
        # aiomqtt 2.5 reads ``_connected.exception()``, which raises when a cancel
        # interrupted the connect (Ctrl-C while connecting): nobody waits on this client
        if self._connected.cancelled():
            return
        super()._on_disconnect(*args, **kwargs)

    def _on_publish(
        self,
        client: Any,
        userdata: Any,
        mid: int,
        reason_code: ReasonCode,
        properties: Properties,
    ) -> None:
        fut = self._reason_futs.pop(mid, None)
        if fut is not None and not fut.done():
            fut.set_result(reason_code)
        super()._on_publish(client, userdata, mid, reason_code, properties)

    async def publish_checked(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        retain: bool = False,
        expiry_s: float | None = None,
        timeout: float = 10.0,
    ) -> None:
        # MQTT's Message Expiry Interval is a 32-bit count of seconds
        props = None if expiry_s is None else _expiry_props(min(max(1, int(expiry_s)), 0xFFFFFFFF))
        fut: asyncio.Future[ReasonCode] = asyncio.get_running_loop().create_future()
        info = self._client.publish(topic, payload, qos, retain, props)
        if info.rc != 0:
            raise aiomqtt.MqttCodeError(info.rc, "Could not publish message")
        if qos == 0:
            return
        self._reason_futs[info.mid] = fut
        try:
            done, _ = await asyncio.wait(
                (fut, self._disconnected), timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            self._reason_futs.pop(info.mid, None)
        if fut not in done:
            fut.cancel()
            raise aiomqtt.MqttError("publish not acknowledged (timeout or disconnect)")
        rc = fut.result()
        if rc.is_failure:
            raise PublishDenied(topic, int(rc.value), str(rc))


@dataclass(slots=True)
class _LinkStats:
    connects: int = 0
    disconnects: int = 0
    messages_in: int = 0
    handler_errors: int = 0
    publishes: int = 0
    denied: int = 0
    last_error: str = ""
    extra: dict[str, int] = field(default_factory=dict)


class MqttLink:
    """A reconnecting MQTT v5 connection: ``async with MqttLink(...) as link``."""

    def __init__(
        self,
        settings: MqttSettings,
        *,
        client_id: str,
        subscriptions: list[tuple[str, int]] | None = None,
        handler: MessageHandler | None = None,
        will: aiomqtt.Will | None = None,
        on_connect: Callable[[CheckedClient], Awaitable[None]] | None = None,
        clean_start: bool = False,
        max_queued_incoming: int = 0,
    ) -> None:
        self.settings = settings
        self.client_id = client_id
        self._subs = list(subscriptions or [])
        self._handler = handler
        self._will = will
        self._on_connect = on_connect
        self._clean_start = clean_start
        self._max_queued_incoming = max_queued_incoming
        self._client: CheckedClient | None = None
        self.connected = asyncio.Event()
        self.stats = _LinkStats()
        self._task: asyncio.Task[None] | None = None
        self._entered = False
        # the broker's reason when it refused the last login (None once one succeeds)
        self.login_refused: str | None = None
        # topic -> the broker's SUBACK reason, for subscriptions it refused on this connection
        self.refused_subscriptions: dict[str, str] = {}

    async def __aenter__(self) -> Self:
        if self._entered:
            raise RuntimeError("MqttLink is not reentrant")
        self._entered = True
        self._task = asyncio.create_task(self._run(), name=f"mqtt:{self.client_id}")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._task is not None:
            await cancel_until_done(self._task)

    async def wait_connected(self, timeout: float | None = None) -> None:
        async with asyncio.timeout(timeout):
            await self.connected.wait()

    def _make_client(self) -> CheckedClient:
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = self.settings.session_expiry_s
        s = self.settings
        return CheckedClient(
            s.host,
            s.port,
            username=s.username,
            password=s.password,
            tls_params=s.tls_params(),
            identifier=self.client_id,
            protocol=aiomqtt.ProtocolVersion.V5,
            clean_start=self._clean_start,
            properties=props,
            keepalive=s.keepalive,
            will=self._will,
            max_inflight_messages=s.max_inflight,
            max_queued_incoming_messages=self._max_queued_incoming,
            timeout=10,
            # paho leaves Nagle on: a small PUBLISH then waits for the broker's delayed
            # ACK, ~40 ms (measured: e2e p99 41 ms with Nagle, see benchmarks/bench_e2e.py)
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
        )

    async def _run(self) -> None:
        attempt = 0
        while True:
            try:
                async with self._make_client() as client:
                    self.login_refused = None
                    self.refused_subscriptions.clear()
                    for topic, qos in self._subs:
                        await self._subscribe(client, topic, qos)
                    if self._on_connect is not None:
                        await self._on_connect(client)
                    self._client = client
                    self.stats.connects += 1
                    attempt = 0
                    self.connected.set()
                    log.info("mqtt connected client=%s port=%s", self.client_id, self.settings.port)
                    async for message in client.messages:
                        self.stats.messages_in += 1
                        if self._handler is not None:
                            await self._dispatch(message)
                        # not kept until the next message arrives: a retained bundle is MBs
                        del message
            except aiomqtt.MqttError as exc:
                self.stats.last_error = str(exc)
                if self._client is None and is_login_refusal(exc):
                    self.login_refused = str(exc)
                log.warning(
                    "mqtt link down client=%s attempt=%d error=%s%s", self.client_id, attempt,
                    exc, tls_hint(self.settings, str(exc)),
                )
            finally:
                if self._client is not None:
                    self.stats.disconnects += 1
                self._client = None
                self.connected.clear()
            await asyncio.sleep(backoff_delay(attempt))
            attempt += 1

    async def _dispatch(self, message: aiomqtt.Message) -> None:
        assert self._handler is not None
        try:
            await self._handler(message)
        except Exception:  # a handler bug must not kill the connection
            self.stats.handler_errors += 1
            log.exception("mqtt handler failed client=%s topic=%s", self.client_id, message.topic)

    async def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        retain: bool = False,
        expiry_s: float | None = None,
        timeout: float = 10.0,
    ) -> None:
        """Publish once connected; raises aiomqtt.MqttError on loss, PublishDenied on refusal."""
        client = self._client
        if client is None:
            await self.wait_connected(timeout)
            client = self._client
            if client is None:
                raise aiomqtt.MqttError("not connected")
        try:
            await client.publish_checked(
                topic, payload, qos=qos, retain=retain, expiry_s=expiry_s, timeout=timeout
            )
        except PublishDenied:
            self.stats.denied += 1
            raise
        self.stats.publishes += 1

    async def subscribe(self, topic: str, qos: int = 1) -> None:
        """Add a subscription now (if connected) and on every reconnect."""
        self._subs.append((topic, qos))
        if self._client is not None:
            await self._subscribe(self._client, topic, qos)

    async def _subscribe(self, client: CheckedClient, topic: str, qos: int) -> None:
        """Subscribe; a refusal in the SUBACK (reason >= 0x80) is remembered and logged."""
        granted = await client.subscribe(topic, options=_sub_options(topic, qos))
        refused = [c for c in granted if isinstance(c, ReasonCode) and c.is_failure]
        if refused:
            self.refused_subscriptions[topic] = f"{refused[0]} (0x{int(refused[0].value):02x})"
            log.warning("mqtt subscription refused client=%s topic=%s reason=%s",
                        self.client_id, topic, refused[0])
