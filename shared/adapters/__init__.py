"""The only code that talks to Firestore, Cloud Tasks, Cloud Storage, Cloud Scheduler and Gemini."""
