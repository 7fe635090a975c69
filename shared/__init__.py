"""The platform's library: models, services and the adapters that talk to Google Cloud."""
