"""The app-side client: validate, enqueue, send in the background (built in the SDK issue)."""
