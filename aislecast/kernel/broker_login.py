"""How a process logs in to an MQTT broker: the fields ``[broker]`` (gateway and HQ) and
each HQ ``[[shards]]`` table share, their checks, and the :class:`MqttSettings` they give.

One struct, inherited by each config section that adds fields of its own (HQ's worker
name and session expiry, a shard's stores), so that a new login option (a TLS setting,
say) is written, checked and documented once.
"""

from __future__ import annotations

import msgspec

from aislecast.kernel.config import TcpPort
from aislecast.kernel.errors import ConfigError
from aislecast.kernel.mqtt import MqttSettings
from aislecast.kernel.privatefile import check_tls_files, read_secret

__all__ = ["BrokerLogin"]


class BrokerLogin(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``host``/``port``, a password login (or a file holding the password) and TLS."""

    host: str = "127.0.0.1"
    port: TcpPort = 1883
    # the broker login: gw.{store}.{gateway} for a gateway (`aislecast hq gateways add`),
    # hq.{worker} for HQ; None with a client certificate (its CN is the username)
    username: str | None = None
    password: str | None = None
    # a file (0600) whose first line is the password: keeps the secret out of the TOML
    password_file: str | None = None
    # CA certificate(s), PEM, that signed the broker's TLS certificate; None: plain TCP
    tls_ca: str | None = None
    # this client's certificate and key (0600) for a mutual-TLS listener
    tls_cert: str | None = None
    tls_key: str | None = None

    def check(self, where: str, *, file: str | None = None) -> None:
        """One of password and password_file at most; TLS files readable and paired."""
        if self.password is not None and self.password_file is not None:
            raise ConfigError(f"{where}.password_file", f"is set together with {where}.password",
                              hint="keep one of them (password_file keeps the secret out of "
                                   "the file)", file=file)
        check_tls_files(where, ca=self.tls_ca, cert=self.tls_cert, key=self.tls_key, file=file)

    def secret(self, where: str, *, file: str | None = None) -> str | None:
        """``password``, or the first line of ``password_file`` (read now; never logged)."""
        if self.password is not None or self.password_file is None:
            return self.password
        return read_secret(self.password_file, f"{where}.password_file", file=file)

    def mqtt_settings(self, where: str = "broker", *, session_expiry_s: int | None = None,
                      file: str | None = None) -> MqttSettings:
        """The link settings, the password read from its file if need be."""
        extra = {} if session_expiry_s is None else {"session_expiry_s": session_expiry_s}
        return MqttSettings(host=self.host, port=self.port, username=self.username,
                            password=self.secret(where, file=file), tls_ca=self.tls_ca,
                            tls_cert=self.tls_cert, tls_key=self.tls_key, **extra)
