"""Canary: the private parts of aiomqtt and paho that aislecast.kernel.mqtt relies on still exist.

CheckedClient reads PUBACK reason codes through aiomqtt's ``_on_publish`` hook and the
underlying paho client, and races waits against ``_disconnected``; MqttLink cancels
cleanly through ``_connected``. A new aiomqtt that renames them must fail here first.
"""

from __future__ import annotations

import inspect

import aiomqtt
import paho.mqtt.client as paho

from aislecast.kernel.mqtt import CheckedClient


async def test_aiomqtt_private_surface_we_use() -> None:
    client = aiomqtt.Client("127.0.0.1", 1)
    for name in ("_client", "_disconnected", "_connected", "_pending_publishes"):
        assert hasattr(client, name), f"aiomqtt.Client lost {name}"
    assert isinstance(client._client, paho.Client)
    params = list(inspect.signature(aiomqtt.Client._on_publish).parameters)
    assert params == ["self", "client", "userdata", "mid", "reason_code", "properties"]


async def test_paho_publish_returns_a_message_info_with_mid() -> None:
    client = CheckedClient("127.0.0.1", 1)
    info = client._client.publish("t", b"x", qos=1)  # not connected: queued, has a mid
    assert isinstance(info, paho.MQTTMessageInfo)
    assert isinstance(info.mid, int)
