"""Waiting for an agent (../shared/spec/hotline.md v1.2): the words a waiting caller hears
(position, expected wait, the callback offer and dialog), the staffed hours, and the
callbacks that keep a caller's place in line.

The dialplan owns the waiting itself (queue, music, when announcements come); the
``queue-wait`` FastAGI route owns the words and the callback dialog; the desk process owns
the callbacks' dialling and retries (it has AMI and the store).
"""
