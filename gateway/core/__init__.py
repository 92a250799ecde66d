"""The sans-I/O core: pure functions from request bytes and facts to decisions.

Nothing here imports aiohttp, redis or asyncio, reads the clock or does I/O.
"""
