"""Minimal aiohttp pass-through proxy: the Python floor for the gateway (no inspection, no store).

Same logic as the shared baseline rig's passthrough.py, with the upstream and port as arguments:
    python bench/passthrough.py http://127.0.0.1:18080 18082 [HOST]
"""

import sys

import aiohttp
from aiohttp import web

UPSTREAM = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:18080"
PORT = int(sys.argv[2]) if len(sys.argv) > 2 else 18082
HOST = sys.argv[3] if len(sys.argv) > 3 else "127.0.0.1"


async def on_startup(app):
    app["s"] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256))


async def on_cleanup(app):
    await app["s"].close()


async def handle(request):
    body = await request.read()
    headers = {"Content-Type": request.content_type, "SOAPAction": request.headers.get("SOAPAction", "")}
    async with request.app["s"].post(UPSTREAM + request.path_qs, data=body, headers=headers) as r:
        data = await r.read()
        return web.Response(body=data, status=r.status, content_type="text/xml")


app = web.Application(client_max_size=64 * 1024 * 1024)
app.on_startup.append(on_startup)
app.on_cleanup.append(on_cleanup)
app.router.add_route("*", "/{tail:.*}", handle)

if __name__ == "__main__":
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    web.run_app(app, host=HOST, port=PORT, access_log=None, print=None)
