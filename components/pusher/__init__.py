"""Pusher: TFX's Pusher that also leaves the model's eval record in the pushed version."""
