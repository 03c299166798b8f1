"""The agents' side of the hotline (issue 9): the desk that shows each agent what the IVR
learned about the caller the queue is ringing them with.

``accounts`` (agents and their password hashes), ``sessions`` (login sessions),
``web`` (the aiohttp application: the page, the JSON interface and the event stream),
``errors`` (``DeskError``, shared by the hub and the web side).
"""
