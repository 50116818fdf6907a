"""Thin synchronous adapters over the model runtimes; stages call them with ``asyncio.to_thread``."""
