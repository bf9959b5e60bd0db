"""The shared kernel every side stands on: the msgspec schema, the topic contract and
ACL, the campaign model, signing, rotating tokens, the MQTT link and the broker
harness. It imports nothing of edge, gateway, hq, firmware_config or the programs."""

__all__: list[str] = []
