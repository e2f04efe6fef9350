"""The node's own endpoints: /healthz, /metrics, /api/stats; none opens or touches a session."""

from __future__ import annotations

from collections import deque

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry

from edge360 import __version__
from edge360.node.state import NODE, NodeState, node_of
from edge360.ops.metrics import exposition, stores_series

REGISTRY = web.AppKey("edge360_registry", CollectorRegistry)
EGRESS = web.AppKey("edge360_egress_samples", deque)


def _json(data: object, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(data), content_type="application/json",
                        headers={"Cache-Control": "no-store"})


async def healthz(request: web.Request) -> web.Response:
    """200 while serving, 503 while draining; an edge adds each parent's health."""
    node = node_of(request)
    body: dict[str, object] = {
        "status": "draining" if node.draining else "ok",
        "role": node.config.server.role,
        "version": __version__,
        "uptime": round(node.clock() - node.started_at, 3),
    }
    health = getattr(node.role_state, "health", None)
    if callable(health):
        body.update(health())
    return _json(body, 503 if node.draining else 200)


async def metrics(request: web.Request) -> web.Response:
    await node_of(request).refresh()
    data = exposition(request.app[REGISTRY], storing=stores_series(request.headers))
    return web.Response(body=data, headers={"Content-Type": CONTENT_TYPE_LATEST,
                                            "Cache-Control": "no-store"})


def sample_egress(node: NodeState, samples: deque[tuple[float, int]]) -> None:
    """Called once a second: keep (time, egress total) pairs for the egress rate."""
    samples.append((node.clock(), sum(node.node_counters().egress.values())))


def stats_body(node: NodeState, samples: deque[tuple[float, int]]) -> dict[str, object]:
    t = node.tracker
    now = node.clock()
    t.expire(now)
    by_label = t.active_by_label()
    titles: dict[str, int] = {}
    mix: dict[str, int] = {}
    for (title, rendition), n in by_label.items():
        titles[title] = titles.get(title, 0) + n
        mix[rendition] = mix.get(rendition, 0) + n
    rate = 0.0
    if len(samples) >= 2:
        (t0, b0), (t1, b1) = samples[0], samples[-1]
        rate = (b1 - b0) / (t1 - t0) if t1 > t0 else 0.0
    return {
        "sessions_active": t.active,
        "sessions_peak": t.peak,
        "sessions_peak_time": t.peak_time,
        "sessions_peak_recent": t.peak_recent(now),
        "views_total": t.views,
        "sessions_starting": t.starting,
        "idle_timeout": node.config.sessions.idle_timeout,
        "time_scale": node.config.sessions.time_scale,
        "top_titles": sorted(titles.items(), key=lambda kv: -kv[1])[:10],
        "rendition_mix": mix,
        "egress_bytes_total": sum(node.node_counters().egress.values()),
        "egress_bits_per_second": round(rate * 8, 1),
        "role": node.config.server.role,
        "workers": node.config.server.workers,
    }


async def stats(request: web.Request) -> web.Response:
    node = node_of(request)
    await node.refresh()
    return _json(stats_body(node, request.app[EGRESS]))


def monitoring_app(main: web.Application) -> web.Application:
    """The app of server.metrics_listen: /healthz, /metrics and /api/stats of the same node as
    `main` (same state, registry and egress samples), nothing else (content paths are 404)."""
    app = web.Application(client_max_size=1024)
    app[NODE] = main[NODE]
    app[REGISTRY] = main[REGISTRY]
    app[EGRESS] = main[EGRESS]
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/api/stats", stats)
    return app
