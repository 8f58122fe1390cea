"""Dashboard pages (built in the dashboard issue)."""
