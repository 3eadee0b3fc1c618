"""NOA auth plugin: authentication, scopes and rate limits (no side effects on import)."""
