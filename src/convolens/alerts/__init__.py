"""Alerts: rules over the rollups' figures, decided once per window by the workers, sent to webhooks."""
