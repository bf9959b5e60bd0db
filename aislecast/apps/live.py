"""The demo's live terminal view (rich): shoppers, zones, offers and the event tail."""

from __future__ import annotations

import asyncio
import time

from rich.console import Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table

from aislecast.apps.demo import DemoState

__all__ = ["live_view"]


def _render(state: DemoState) -> Group:
    gw, hq = state.gateway, state.hq
    head = Table.grid(padding=(0, 3))
    if gw is not None and hq is not None:
        m = gw.metrics()
        head.add_row(
            f"[b]{time.monotonic() - state.started:5.0f} s[/b]",
            f"adverts {int(m['adverts']):,}",
            f"presence {int(m['triggers_presence_events'])}",
            f"decisions {int(m['recorder_decisions'])}",
            f"offers {int(m['publisher_offers_published'])}",
            f"ingested {hq.ingest.stats.events_ingested}",
            f"outbox {int(m['outbox_rows'])}",
        )
    shoppers = Table(title="shoppers (pseudonymous inboxes)", expand=True)
    for col in ("inbox", "zone", "offers", "opened"):
        shoppers.add_column(col)
    present = gw.parts.presence.present() if gw is not None else {}
    for p in state.phones:
        shoppers.add_row(p.inbox[:10], present.get(p.inbox, "[dim]-[/dim]"),
                         str(p.stats.offers_received), str(p.stats.opened))
    tail = "\n".join(state.log) or "[dim]waiting for shoppers...[/dim]"
    return Group(Panel(head, title="aislecast demo: Ctrl-C to stop"), shoppers,
                 Panel(tail, title="events"), _access(state))


def _access(state: DemoState) -> Panel:
    """Where the demo's HQ is and the accounts it made, to try the console by hand."""
    c = state.credentials
    lines = [f"console {state.hq_url}/console"]
    if c is not None:
        lines += [f"{role}: {name} / {pw}" for role, (name, pw) in c.logins.items()]
        lines += [f"admin token: {c.admin_token}", f"wallet token: {c.wallet_token}"]
    return Panel("\n".join(lines), title="HQ logins (this demo only)")


async def live_view(state: DemoState) -> None:
    """Refresh the view four times a second until cancelled."""
    while state.gateway is None:  # noqa: ASYNC110 - the demo sets it once, early
        await asyncio.sleep(0.1)

    def note(kind: str, data: dict[str, object]) -> None:
        t = time.strftime("%H:%M:%S")
        inbox = str(data.get("inbox", ""))[:10]
        if kind in {"enter", "exit"}:
            state.log.append(f"{t} {inbox} {kind} {data.get('zone')} -> {data.get('reason')}")
        elif kind == "offer_published":
            state.log.append(f"{t} {inbox} [green]offer {data.get('campaign')}[/green]")

    state.gateway.listeners.append(note)
    with Live(_render(state), refresh_per_second=4, transient=False) as live:
        while True:
            await asyncio.sleep(0.25)
            live.update(_render(state))
