"""A command-line client for the session attachments API: `macctl`."""
