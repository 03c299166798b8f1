"""The agent desk: Asterisk's queue as agents see it (AMI link and queue board), the store
of calls and wrap-ups, and the agents' web page."""
