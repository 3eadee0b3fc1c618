"""NOA HTTP core plugin: builds the Litestar app that granian serves.

Importing this package has no side effects; the hook implementations are in
:mod:`noa.builtin_plugins.http.plugin`.
"""
