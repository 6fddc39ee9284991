"""Runnable examples of nanobanana_async (``python -m examples.webapp --simulate``)."""
