"""NOA streaming plugin: event topics over WebSocket (``/ws/events``) and Server-Sent
Events (``/v1/events``), and request/response streaming over WebSocket (``/ws/stream``).

Importing this package has no side effects; the hook implementations are in
:mod:`noa.builtin_plugins.streaming.plugin`. The protocol is in docs/streaming.md.
"""
