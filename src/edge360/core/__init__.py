"""Pure HTTP and caching rules (sans-IO): no asyncio, os, time, socket or aiohttp."""
