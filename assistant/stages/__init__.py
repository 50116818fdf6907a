"""Pipeline stages: each an object with ``async def run(inbox, outbox)``."""
