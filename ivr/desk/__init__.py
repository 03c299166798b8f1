"""The agents' side of the hotline: the desk that shows each agent what the IVR learned
about the caller the queue is ringing them with, fed live by Asterisk.

``ami`` (the guarded AMI link), ``board`` (Asterisk's queue as the desk sees it),
``service`` (the hub: presence, streams, what an agent may see), ``accounts`` (agents and
their password hashes), ``sessions`` (login sessions), ``web`` (the page, the JSON
interface and the event stream), ``app`` (the lifecycle and ``ivr desk``), ``errors``
(``DeskError``, shared by the hub and the web side).
"""
