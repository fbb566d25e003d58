"""One router per resource: tools, scopes, reports, refreshes, health."""
